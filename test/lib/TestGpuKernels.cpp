//===- TestGpuKernels.cpp - Checking the GPU kernels without a GPU --------===//
//
// test-fwp-gpu-kernels: for every scan, lower a copy with convert-fwp-to-gpu
// and run its kernel on a simulated GPU, then compare the result with a
// direct evaluation of the scan from the ops' definitions (FwpOps.td), in
// double precision.
//
// The simulator interprets the kernel's IR (gpu, scf, arith, math, vector,
// memref, llvm ops) for all threads of a block in lock step, with an
// execution mask for divergent scf.if / scf.for. It rejects what would be
// undefined on a GPU: gpu.barrier or gpu.shuffle in divergent code, a thread
// reading or writing shared memory that another thread wrote (or read)
// since the last barrier, out-of-bounds accesses, and two blocks writing
// the same global element.
//
//===----------------------------------------------------------------------===//

#include "fwp/Conversion/FwpToGPU/FwpToGPU.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstring>
#include <random>
#include <unordered_map>

namespace fwp::test {
#define GEN_PASS_DECL_TESTFWPGPUKERNELS
#define GEN_PASS_DEF_TESTFWPGPUKERNELS
#include "TestPasses.h.inc"
} // namespace fwp::test

using namespace mlir;
using namespace mlir::fwp;

namespace {

using Buffer = std::vector<double>;

/// The buffers of one kernel launch, in the kernel's argument order.
struct Launch {
  int64_t B, H, T;
  std::vector<std::string> names;
  std::vector<Buffer> buffers;
};

//===----------------------------------------------------------------------===//
// The reference: a scan evaluated from the ops' definitions
//===----------------------------------------------------------------------===//

/// A value of the scan body: scalar (size 1), vector (n) or matrix
/// (K * V, key-major: W[e * V + m]).
using RefValue = std::vector<double>;

class ReferenceEvaluator {
public:
  explicit ReferenceEvaluator(ScanOp scan) : scan(scan) {}

  LogicalResult run(Launch &launch) {
    unsigned numSeq = scan.getNumSeq(), numParams = scan.getNumParams(),
             numStates = scan.getNumStates();
    Block &body = scan.getBodyBlock();
    auto yield = cast<YieldOp>(body.getTerminator());
    for (int64_t bh = 0; bh < launch.B * launch.H; ++bh) {
      int64_t h = bh % launch.H;
      std::vector<RefValue> states;
      for (unsigned i = 0; i < numStates; ++i) {
        int64_t n = sizeOf(scan.getStateArgs()[i].getType());
        Buffer &buf = launch.buffers[numSeq + numParams + i];
        states.emplace_back(buf.begin() + bh * n, buf.begin() + (bh + 1) * n);
      }
      for (int64_t step = 0; step < launch.T; ++step) {
        int64_t t = scan.getReverse() ? launch.T - 1 - step : step;
        values.clear();
        for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs())) {
          int64_t n = sizeOf(arg.getType());
          Buffer &buf = launch.buffers[i];
          int64_t at = (bh * launch.T + t) * n;
          values[arg] = RefValue(buf.begin() + at, buf.begin() + at + n);
        }
        for (auto [i, arg] : llvm::enumerate(scan.getParamArgs())) {
          int64_t n = sizeOf(arg.getType());
          Buffer &buf = launch.buffers[numSeq + i];
          values[arg] = RefValue(buf.begin() + h * n, buf.begin() + (h + 1) * n);
        }
        for (auto [i, arg] : llvm::enumerate(scan.getStateArgs()))
          values[arg] = states[i];
        for (Operation &op : body.without_terminator())
          if (failed(evaluate(&op)))
            return failure();
        for (unsigned i = 0; i < numStates; ++i)
          states[i] = values.at(yield.getValues()[i]);
        for (auto [i, value] :
             llvm::enumerate(yield.getValues().drop_front(numStates))) {
          const RefValue &v = values.at(value);
          Buffer &buf = launch.buffers[numSeq + numParams + numStates + i];
          int64_t at = (bh * launch.T + t) * int64_t(v.size());
          std::copy(v.begin(), v.end(), buf.begin() + at);
        }
      }
      for (unsigned i = 0; i < numStates; ++i) {
        Buffer &buf = launch.buffers[numSeq + numParams + i];
        std::copy(states[i].begin(), states[i].end(),
                  buf.begin() + bh * states[i].size());
      }
    }
    return success();
  }

  static int64_t sizeOf(Type type) {
    if (auto v = dyn_cast<VectorType>(type))
      return v.getDimSize(0);
    if (auto w = dyn_cast<FastWeightType>(type))
      return w.getKeyDim() * w.getValueDim();
    return 1;
  }

private:
  const RefValue &at(Value v) { return values.at(v); }
  void set(Value v, RefValue r) { values[v] = std::move(r); }

  template <typename F> RefValue map(const RefValue &x, F f) {
    RefValue r(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      r[i] = f(x[i]);
    return r;
  }
  template <typename F>
  RefValue zip(const RefValue &x, const RefValue &y, F f) {
    RefValue r(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      r[i] = f(x[i], y[i]);
    return r;
  }
  static double sum(const RefValue &x) {
    double s = 0;
    for (double v : x)
      s += v;
    return s;
  }
  static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

  LogicalResult evaluate(Operation *op) {
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case<ReadOp>([&](ReadOp read) {
          auto w = cast<FastWeightType>(read.getWeight().getType());
          int64_t K = w.getKeyDim(), V = w.getValueDim();
          const RefValue &W = at(read.getWeight()), &q = at(read.getQuery());
          RefValue y(V, 0.0);
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              y[m] += W[e * V + m] * q[e];
          set(read.getResult(), y);
          return success();
        })
        .Case<ReadTransposedOp>([&](ReadTransposedOp read) {
          auto w = cast<FastWeightType>(read.getWeight().getType());
          int64_t K = w.getKeyDim(), V = w.getValueDim();
          const RefValue &W = at(read.getWeight()), &x = at(read.getValue());
          RefValue y(K, 0.0);
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              y[e] += W[e * V + m] * x[m];
          set(read.getResult(), y);
          return success();
        })
        .Case<WriteSumOp>([&](WriteSumOp write) {
          auto w = cast<FastWeightType>(write.getWeight().getType());
          int64_t K = w.getKeyDim(), V = w.getValueDim();
          RefValue W = at(write.getWeight());
          const RefValue &k = at(write.getKey()), &v = at(write.getValue());
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              W[e * V + m] += k[e] * v[m];
          set(write.getResult(), W);
          return success();
        })
        .Case<WriteDeltaOp>([&](WriteDeltaOp write) {
          auto w = cast<FastWeightType>(write.getWeight().getType());
          int64_t K = w.getKeyDim(), V = w.getValueDim();
          RefValue W = at(write.getWeight());
          const RefValue &k = at(write.getKey()), &v = at(write.getValue());
          double beta = at(write.getBeta())[0];
          RefValue vbar(V, 0.0);
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              vbar[m] += W[e * V + m] * k[e];
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              W[e * V + m] += k[e] * beta * (v[m] - vbar[m]);
          set(write.getNewWeight(), W);
          set(write.getRetrieved(), vbar);
          return success();
        })
        .Case<EluPlusOneOp>([&](EluPlusOneOp o) {
          set(o.getResult(), map(at(o.getX()), [](double x) {
                return x > 0 ? x + 1 : std::exp(x);
              }));
          return success();
        })
        .Case<SumNormOp>([&](SumNormOp o) {
          double s = sum(at(o.getX())) + o.getEps().convertToDouble();
          set(o.getResult(), map(at(o.getX()), [&](double x) { return x / s; }));
          return success();
        })
        .Case<SoftmaxOp>([&](SoftmaxOp o) {
          const RefValue &x = at(o.getX());
          double mx = *std::max_element(x.begin(), x.end());
          RefValue e = map(x, [&](double v) { return std::exp(v - mx); });
          double s = sum(e);
          set(o.getResult(), map(e, [&](double v) { return v / s; }));
          return success();
        })
        .Case<DpfpOp>([&](DpfpOp o) {
          RefValue r = dpfpFeatures(at(o.getX()));
          int64_t twoN = r.size();
          RefValue y;
          for (int64_t s = 1; s <= o.getNu(); ++s)
            for (int64_t i = 0; i < twoN; ++i)
              y.push_back(r[i] * r[(i + s) % twoN]);
          set(o.getResult(), y);
          return success();
        })
        .Case<DpfpGradOp>([&](DpfpGradOp o) {
          const RefValue &x = at(o.getX()), &g = at(o.getGrad());
          RefValue r = dpfpFeatures(x);
          int64_t n = x.size(), twoN = r.size();
          // Chain rule over every output product r[i] r[(i + s) mod 2n].
          RefValue dr(twoN, 0.0);
          int64_t j = 0;
          for (int64_t s = 1; s <= o.getNu(); ++s)
            for (int64_t i = 0; i < twoN; ++i, ++j) {
              int64_t p = (i + s) % twoN;
              dr[i] += g[j] * r[p];
              dr[p] += g[j] * r[i];
            }
          RefValue dx(n);
          for (int64_t i = 0; i < n; ++i)
            dx[i] = (x[i] > 0 ? dr[i] : 0.0) - (x[i] < 0 ? dr[i + n] : 0.0);
          set(o.getResult(), dx);
          return success();
        })
        .Case<SigmoidOp>([&](SigmoidOp o) {
          set(o.getResult(), map(at(o.getX()), sigmoid));
          return success();
        })
        .Case<TanhOp>([&](TanhOp o) {
          set(o.getResult(),
              map(at(o.getX()), [](double x) { return std::tanh(x); }));
          return success();
        })
        .Case<SqrtOp>([&](SqrtOp o) {
          set(o.getResult(),
              map(at(o.getX()), [](double x) { return std::sqrt(x); }));
          return success();
        })
        .Case<ScaleRowsOp>([&](ScaleRowsOp o) {
          auto w = cast<FastWeightType>(o.getWeight().getType());
          int64_t K = w.getKeyDim(), V = w.getValueDim();
          RefValue W = at(o.getWeight());
          const RefValue &a = at(o.getFactors());
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              W[e * V + m] *= a[e];
          set(o.getResult(), W);
          return success();
        })
        .Case<RowDotOp>([&](RowDotOp o) {
          auto w = cast<FastWeightType>(o.getLhs().getType());
          int64_t K = w.getKeyDim(), V = w.getValueDim();
          const RefValue &A = at(o.getLhs()), &B = at(o.getRhs());
          RefValue y(K, 0.0);
          for (int64_t e = 0; e < K; ++e)
            for (int64_t m = 0; m < V; ++m)
              y[e] += A[e * V + m] * B[e * V + m];
          set(o.getResult(), y);
          return success();
        })
        .Case<NegOp>([&](NegOp o) {
          set(o.getResult(), map(at(o.getX()), [](double x) { return -x; }));
          return success();
        })
        .Case<AddOp>([&](AddOp o) {
          set(o.getResult(), zip(at(o.getLhs()), at(o.getRhs()),
                                 [](double a, double b) { return a + b; }));
          return success();
        })
        .Case<SubOp>([&](SubOp o) {
          set(o.getResult(), zip(at(o.getLhs()), at(o.getRhs()),
                                 [](double a, double b) { return a - b; }));
          return success();
        })
        .Case<MulOp>([&](MulOp o) {
          set(o.getResult(), zip(at(o.getLhs()), at(o.getRhs()),
                                 [](double a, double b) { return a * b; }));
          return success();
        })
        .Case<DivOp>([&](DivOp o) {
          set(o.getResult(), zip(at(o.getLhs()), at(o.getRhs()),
                                 [](double a, double b) { return a / b; }));
          return success();
        })
        .Case<ConstantOp>([&](ConstantOp o) {
          set(o.getResult(), RefValue(sizeOf(o.getType()),
                                      o.getValue().convertToDouble()));
          return success();
        })
        .Case<ScaleOp>([&](ScaleOp o) {
          double f = at(o.getFactor())[0];
          set(o.getResult(), map(at(o.getX()), [&](double x) { return x * f; }));
          return success();
        })
        .Case<DotOp>([&](DotOp o) {
          set(o.getResult(),
              RefValue{sum(zip(at(o.getLhs()), at(o.getRhs()),
                               [](double a, double b) { return a * b; }))});
          return success();
        })
        .Case<LayerNormOp>([&](LayerNormOp o) {
          const RefValue &x = at(o.getX()), &w = at(o.getWeight()),
                         &bias = at(o.getBias());
          auto [xhat, rstd] = normalise(x, o.getEps().convertToDouble());
          RefValue y(x.size());
          for (size_t i = 0; i < x.size(); ++i)
            y[i] = xhat[i] * w[i] + bias[i];
          set(o.getResult(), y);
          return success();
        })
        .Case<LayerNormGradOp>([&](LayerNormGradOp o) {
          const RefValue &x = at(o.getX()), &w = at(o.getWeight()),
                         &g = at(o.getGrad());
          auto [xhat, rstd] = normalise(x, o.getEps().convertToDouble());
          size_t n = x.size();
          // dxhat_j / dx_i = rstd (delta_ij - 1/n - xhat_i xhat_j / n).
          RefValue dx(n, 0.0), dw(n), db(g);
          for (size_t i = 0; i < n; ++i) {
            for (size_t j = 0; j < n; ++j) {
              double jac = rstd * ((i == j ? 1.0 : 0.0) - 1.0 / n -
                                   xhat[i] * xhat[j] / n);
              dx[i] += g[j] * w[j] * jac;
            }
            dw[i] = g[i] * xhat[i];
          }
          set(o.getGradX(), dx);
          set(o.getGradWeight(), dw);
          set(o.getGradBias(), db);
          return success();
        })
        .Case<EluPlusOneGradOp>([&](EluPlusOneGradOp o) {
          set(o.getResult(), zip(at(o.getY()), at(o.getGrad()),
                                 [](double y, double g) {
                                   return g * std::min(y, 1.0);
                                 }));
          return success();
        })
        .Case<SoftmaxGradOp>([&](SoftmaxGradOp o) {
          const RefValue &y = at(o.getX()), &g = at(o.getGrad());
          double d = sum(zip(y, g, [](double a, double b) { return a * b; }));
          set(o.getResult(),
              zip(y, g, [&](double yi, double gi) { return yi * (gi - d); }));
          return success();
        })
        .Case<SumNormGradOp>([&](SumNormGradOp o) {
          const RefValue &x = at(o.getX()), &g = at(o.getGrad());
          double s = sum(x) + o.getEps().convertToDouble();
          double gx = sum(zip(g, x, [](double a, double b) { return a * b; }));
          set(o.getResult(),
              map(g, [&](double gi) { return gi / s - gx / (s * s); }));
          return success();
        })
        .Case<SigmoidGradOp>([&](SigmoidGradOp o) {
          set(o.getResult(), zip(at(o.getY()), at(o.getGrad()),
                                 [](double y, double g) {
                                   return g * y * (1 - y);
                                 }));
          return success();
        })
        .Case<TanhGradOp>([&](TanhGradOp o) {
          set(o.getResult(), zip(at(o.getY()), at(o.getGrad()),
                                 [](double y, double g) {
                                   return g * (1 - y * y);
                                 }));
          return success();
        })
        .Default([&](Operation *other) {
          return other->emitOpError("has no reference semantics in "
                                    "test-fwp-gpu-kernels");
        });
  }

  static RefValue dpfpFeatures(const RefValue &x) {
    RefValue r;
    for (double v : x)
      r.push_back(std::max(v, 0.0));
    for (double v : x)
      r.push_back(std::max(-v, 0.0));
    return r;
  }

  static std::pair<RefValue, double> normalise(const RefValue &x, double eps) {
    double n = x.size(), mean = sum(x) / n, var = 0;
    for (double v : x)
      var += (v - mean) * (v - mean) / n;
    double rstd = 1.0 / std::sqrt(var + eps);
    RefValue xhat(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      xhat[i] = (x[i] - mean) * rstd;
    return {xhat, rstd};
  }

  ScanOp scan;
  DenseMap<Value, RefValue> values;
};

//===----------------------------------------------------------------------===//
// The simulated GPU
//===----------------------------------------------------------------------===//

/// One SSA value across the threads of a block: `width` numbers per thread
/// (1 for scalars, n for vector<n>). Integers, booleans and pointers are
/// held as doubles too (exact below 2^53).
struct SimValue {
  unsigned width = 1;
  std::vector<double> data;
};

/// Pointers are buffer * 2^32 + byte offset.
constexpr double kBufferStride = 4294967296.0;

class Simulator {
public:
  Simulator(gpu::GPUFuncOp func, Launch &launch, int64_t blockSize)
      : func(func), launch(launch), NT(blockSize) {
    auto dtype = func->getAttrOfType<StringAttr>(kGpuDtypeAttr);
    elementBytes = dtype && dtype.getValue() == "f64" ? 8 : 4;
  }

  std::string error;

  LogicalResult run() {
    int64_t numBlocks = launch.B * launch.H;
    blockWriter.clear();
    for (const Buffer &buf : launch.buffers)
      blockWriter.emplace_back(buf.size(), -1);
    for (block = 0; block < numBlocks; ++block) {
      env.clear();
      shared.assign(0, 0.0);
      sharedState.clear();
      epoch = 0;
      Block &entry = func.getBody().front();
      unsigned numBuffers = launch.buffers.size();
      for (auto [i, arg] : llvm::enumerate(entry.getArguments())) {
        double v;
        if (i < numBuffers)
          v = double(i) * kBufferStride;
        else if (i == numBuffers)
          v = launch.B;
        else if (i == numBuffers + 1)
          v = launch.H;
        else
          v = launch.T;
        env[arg] = uniform(v);
      }
      std::vector<char> all(NT, 1);
      SmallVector<SimValue> ignored;
      if (failed(execBlock(entry, all, ignored)))
        return failure();
    }
    return success();
  }

private:
  SimValue uniform(double v, unsigned width = 1) {
    SimValue s;
    s.width = width;
    s.data.assign(NT * width, v);
    return s;
  }

  LogicalResult fail(Operation *op, const Twine &message) {
    std::string text;
    llvm::raw_string_ostream os(text);
    os << "block " << block << ": " << message << " at " << op->getName()
       << " (" << op->getLoc() << ")";
    error = text;
    return failure();
  }

  SimValue &result(Value v, unsigned width) {
    SimValue &s = env[v];
    if (s.data.empty()) {
      s.width = width;
      s.data.assign(NT * width, std::nan(""));
    }
    return s;
  }

  static unsigned widthOf(Type type) {
    if (auto v = dyn_cast<VectorType>(type))
      return v.getNumElements();
    return 1;
  }

  static double round(Type type, double v) {
    Type element = getElementTypeOrSelf(type);
    if (element.isF32())
      return double(float(v));
    return v;
  }

  // --- shared memory with race checks ---------------------------------------
  struct SharedCell {
    int64_t writeEpoch = -1, writer = -1;
    int64_t readEpoch = -1, reader = -1; ///< -2: several threads
    Operation *lastWrite = nullptr, *lastRead = nullptr;
  };
  static std::string where(Operation *op) {
    std::string text;
    llvm::raw_string_ostream os(text);
    if (op)
      os << op->getName() << " at " << op->getLoc();
    return text;
  }

  LogicalResult sharedAccess(Operation *op, int64_t index, int64_t thread,
                             bool write) {
    if (index < 0 || index >= int64_t(shared.size()))
      return fail(op, "shared memory index " + Twine(index) +
                          " out of bounds (" + Twine(shared.size()) + ")");
    SharedCell &c = sharedState[index];
    if (c.writeEpoch == epoch && c.writer != thread)
      return fail(op, "thread " + Twine(thread) + (write ? " writes" : " reads") +
                          " shared element " + Twine(index) +
                          " that thread " + Twine(c.writer) +
                          " wrote since the last barrier (" +
                          where(c.lastWrite) + ")");
    if (write && c.readEpoch == epoch && c.reader != thread)
      return fail(op, "thread " + Twine(thread) + " writes shared element " +
                          Twine(index) +
                          " that another thread read since the last barrier (" +
                          where(c.lastRead) + ")");
    if (write) {
      c.writeEpoch = epoch;
      c.writer = thread;
      c.lastWrite = op;
      return success();
    }
    c.lastRead = op;
    if (c.readEpoch == epoch && c.reader != thread) {
      c.reader = -2;
    } else {
      c.readEpoch = epoch;
      c.reader = thread;
    }
    return success();
  }

  LogicalResult globalAddress(Operation *op, double pointer, unsigned bytes,
                              int64_t &bufferIndex, int64_t &element) {
    bufferIndex = int64_t(pointer / kBufferStride);
    int64_t offset = int64_t(pointer - double(bufferIndex) * kBufferStride);
    if (bufferIndex < 0 || bufferIndex >= int64_t(launch.buffers.size()) ||
        offset % bytes != 0)
      return fail(op, "bad global pointer");
    element = offset / bytes;
    if (element < 0 || element >= int64_t(launch.buffers[bufferIndex].size()))
      return fail(op, "out-of-bounds access to buffer '" +
                          launch.names[bufferIndex] + "' at element " +
                          Twine(element) + " of " +
                          Twine(launch.buffers[bufferIndex].size()));
    return success();
  }

  // --- execution ----------------------------------------------------------------
  LogicalResult execBlock(Block &blk, const std::vector<char> &mask,
                          SmallVectorImpl<SimValue> &yielded) {
    for (Operation &op : blk) {
      if (isa<scf::YieldOp>(op)) {
        yielded.clear();
        for (Value v : op.getOperands())
          yielded.push_back(env.at(v));
        return success();
      }
      if (isa<gpu::ReturnOp>(op))
        return success();
      if (failed(exec(&op, mask)))
        return failure();
    }
    return success();
  }

  bool converged(const std::vector<char> &mask) {
    return llvm::all_of(mask, [](char c) { return c != 0; });
  }

  template <typename F>
  LogicalResult elementwise(Operation *op, const std::vector<char> &mask,
                            F f) {
    Type type = op->getResult(0).getType();
    unsigned width = widthOf(type);
    SmallVector<SimValue *> args;
    for (Value v : op->getOperands())
      args.push_back(&env.at(v));
    SimValue &out = result(op->getResult(0), width);
    SmallVector<double, 4> in(args.size());
    for (int64_t th = 0; th < NT; ++th) {
      if (!mask[th])
        continue;
      for (unsigned w = 0; w < width; ++w) {
        for (size_t a = 0; a < args.size(); ++a) {
          unsigned aw = args[a]->width;
          in[a] = args[a]->data[th * aw + (aw == 1 ? 0 : w)];
        }
        out.data[th * width + w] = round(type, f(in));
      }
    }
    return success();
  }

  LogicalResult exec(Operation *op, const std::vector<char> &mask);
  LogicalResult execFor(scf::ForOp loop, const std::vector<char> &mask);
  LogicalResult execIf(scf::IfOp ifOp, const std::vector<char> &mask);

  gpu::GPUFuncOp func;
  Launch &launch;
  int64_t NT;
  unsigned elementBytes = 4;
  int64_t block = 0;
  /// Values by SSA value; a node map keeps references valid while the map
  /// grows.
  struct ValueEnv {
    std::unordered_map<const void *, SimValue> map;
    SimValue &operator[](Value v) { return map[v.getAsOpaquePointer()]; }
    SimValue &at(Value v) { return map.at(v.getAsOpaquePointer()); }
    void clear() { map.clear(); }
  } env;
  std::vector<double> shared;
  std::vector<SharedCell> sharedState;
  int64_t epoch = 0;
  Value arena;
  std::vector<std::vector<int64_t>> blockWriter;
};

static bool evalCmpF(arith::CmpFPredicate p, double a, double b) {
  bool unordered = std::isnan(a) || std::isnan(b);
  using P = arith::CmpFPredicate;
  switch (p) {
  case P::OEQ: return !unordered && a == b;
  case P::OGT: return !unordered && a > b;
  case P::OGE: return !unordered && a >= b;
  case P::OLT: return !unordered && a < b;
  case P::OLE: return !unordered && a <= b;
  case P::ONE: return !unordered && a != b;
  case P::ORD: return !unordered;
  case P::UEQ: return unordered || a == b;
  case P::UGT: return unordered || a > b;
  case P::UGE: return unordered || a >= b;
  case P::ULT: return unordered || a < b;
  case P::ULE: return unordered || a <= b;
  case P::UNE: return unordered || a != b;
  case P::UNO: return unordered;
  case P::AlwaysTrue: return true;
  case P::AlwaysFalse: return false;
  }
  return false;
}

static bool evalCmpI(arith::CmpIPredicate p, double a, double b) {
  using P = arith::CmpIPredicate;
  switch (p) {
  case P::eq: return a == b;
  case P::ne: return a != b;
  // Values in kernels are non-negative where the sign matters.
  case P::slt: case P::ult: return a < b;
  case P::sle: case P::ule: return a <= b;
  case P::sgt: case P::ugt: return a > b;
  case P::sge: case P::uge: return a >= b;
  }
  return false;
}

LogicalResult Simulator::exec(Operation *op, const std::vector<char> &mask) {
  using Args = ArrayRef<double>;
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<arith::ConstantOp>([&](arith::ConstantOp c) {
        Type type = c.getType();
        unsigned width = widthOf(type);
        SimValue v = uniform(0.0, width);
        auto scalarOf = [](Attribute a) -> double {
          if (auto f = dyn_cast<FloatAttr>(a))
            return f.getValueAsDouble();
          return double(cast<IntegerAttr>(a).getValue().getSExtValue());
        };
        if (auto dense = dyn_cast<DenseElementsAttr>(c.getValue())) {
          SmallVector<Attribute> elems(dense.getValues<Attribute>());
          for (int64_t th = 0; th < NT; ++th)
            for (unsigned w = 0; w < width; ++w)
              v.data[th * width + w] =
                  scalarOf(elems[dense.isSplat() ? 0 : w]);
        } else {
          double x = scalarOf(c.getValue());
          std::fill(v.data.begin(), v.data.end(), x);
        }
        env[c.getResult()] = std::move(v);
        return success();
      })
      .Case<arith::AddIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] + a[1]; });
      })
      .Case<arith::SubIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] - a[1]; });
      })
      .Case<arith::MulIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] * a[1]; });
      })
      .Case<arith::DivUIOp, arith::DivSIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          return double(int64_t(a[0]) / int64_t(a[1]));
        });
      })
      .Case<arith::RemUIOp, arith::RemSIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          return double(int64_t(a[0]) % int64_t(a[1]));
        });
      })
      .Case<arith::AndIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          return double(int64_t(a[0]) & int64_t(a[1]));
        });
      })
      .Case<arith::OrIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          return double(int64_t(a[0]) | int64_t(a[1]));
        });
      })
      .Case<arith::XOrIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          return double(int64_t(a[0]) ^ int64_t(a[1]));
        });
      })
      .Case<arith::MinUIOp, arith::MinSIOp>([&](auto o) {
        return elementwise(o, mask,
                           [](Args a) { return std::min(a[0], a[1]); });
      })
      .Case<arith::MaxUIOp, arith::MaxSIOp>([&](auto o) {
        return elementwise(o, mask,
                           [](Args a) { return std::max(a[0], a[1]); });
      })
      .Case<arith::IndexCastOp, arith::IndexCastUIOp, arith::ExtUIOp,
            arith::ExtSIOp, arith::TruncIOp, arith::ExtFOp, arith::TruncFOp,
            arith::SIToFPOp, arith::UIToFPOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0]; });
      })
      .Case<arith::CmpIOp>([&](arith::CmpIOp o) {
        auto p = o.getPredicate();
        return elementwise(o, mask, [&](Args a) {
          return double(evalCmpI(p, a[0], a[1]));
        });
      })
      .Case<arith::CmpFOp>([&](arith::CmpFOp o) {
        auto p = o.getPredicate();
        return elementwise(o, mask, [&](Args a) {
          return double(evalCmpF(p, a[0], a[1]));
        });
      })
      .Case<arith::SelectOp>([&](auto o) {
        return elementwise(o, mask,
                           [](Args a) { return a[0] != 0 ? a[1] : a[2]; });
      })
      .Case<arith::AddFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] + a[1]; });
      })
      .Case<arith::SubFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] - a[1]; });
      })
      .Case<arith::MulFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] * a[1]; });
      })
      .Case<arith::DivFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return a[0] / a[1]; });
      })
      .Case<arith::NegFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return -a[0]; });
      })
      .Case<arith::MaximumFOp, arith::MaxNumFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          if (std::isnan(a[0]) || std::isnan(a[1]))
            return std::nan("");
          return std::max(a[0], a[1]);
        });
      })
      .Case<arith::MinimumFOp, arith::MinNumFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) {
          if (std::isnan(a[0]) || std::isnan(a[1]))
            return std::nan("");
          return std::min(a[0], a[1]);
        });
      })
      .Case<math::ExpOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::exp(a[0]); });
      })
      .Case<math::TanhOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::tanh(a[0]); });
      })
      .Case<math::SqrtOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::sqrt(a[0]); });
      })
      .Case<math::RsqrtOp>([&](auto o) {
        return elementwise(o, mask,
                           [](Args a) { return 1.0 / std::sqrt(a[0]); });
      })
      .Case<math::LogOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::log(a[0]); });
      })
      .Case<math::AbsFOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::fabs(a[0]); });
      })
      .Case<arith::BitcastOp>([&](arith::BitcastOp o) {
        Type from = getElementTypeOrSelf(o.getIn().getType());
        Type to = getElementTypeOrSelf(o.getType());
        if (from.isF32() && to.isInteger(32))
          return elementwise(o, mask, [](Args a) {
            float f = float(a[0]);
            int32_t i;
            std::memcpy(&i, &f, sizeof(i));
            return double(i);
          });
        if (from.isInteger(32) && to.isF32())
          return elementwise(o, mask, [](Args a) {
            int32_t i = int32_t(int64_t(a[0]));
            float f;
            std::memcpy(&f, &i, sizeof(f));
            return double(f);
          });
        return fail(o, "only f32 <-> i32 bitcasts are simulated");
      })
      .Case<arith::ShLIOp>([&](arith::ShLIOp o) {
        unsigned bits = getElementTypeOrSelf(o.getType()).getIntOrFloatBitWidth();
        return elementwise(o, mask, [&](Args a) {
          uint64_t v = uint64_t(int64_t(a[0])) << int64_t(a[1]);
          if (bits == 32)
            return double(int32_t(uint32_t(v)));
          return double(int64_t(v));
        });
      })
      .Case<arith::FPToSIOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::trunc(a[0]); });
      })
      .Case<math::FloorOp, LLVM::FFloorOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::floor(a[0]); });
      })
      .Case<LLVM::FAbsOp>([&](auto o) {
        return elementwise(o, mask, [](Args a) { return std::fabs(a[0]); });
      })
      .Case<LLVM::InlineAsmOp>([&](LLVM::InlineAsmOp o) {
        StringRef text = o.getAsmString();
        if (text == kPtxPrefetchL1) {
          // No effect, but the address must be inside a buffer.
          const SimValue &ptr = env.at(o.getOperands()[0]);
          for (int64_t th = 0; th < NT; ++th) {
            if (!mask[th])
              continue;
            int64_t buffer, element;
            if (failed(globalAddress(o, ptr.data[th], elementBytes, buffer,
                                     element)))
              return failure();
          }
          return success();
        }
        if (text == kPtxSqrt)
          return elementwise(o, mask, [](Args a) { return std::sqrt(a[0]); });
        if (text == kPtxAbs)
          return elementwise(o, mask, [](Args a) { return std::fabs(a[0]); });
        if (text == kPtxFloor)
          return elementwise(o, mask,
                             [](Args a) { return std::floor(a[0]); });
        return fail(o, "inline assembly '" + text + "' not simulated");
      })
      .Case<math::FmaOp, vector::FMAOp, LLVM::FMAOp>([&](auto o) {
        return elementwise(o, mask,
                           [](Args a) { return a[0] * a[1] + a[2]; });
      })
      .Case<vector::BroadcastOp>([&](vector::BroadcastOp o) {
        if (widthOf(o.getSource().getType()) != 1)
          return fail(o, "only scalar broadcasts are simulated");
        return elementwise(o, mask, [](Args a) { return a[0]; });
      })
      .Case<vector::FromElementsOp>([&](vector::FromElementsOp o) {
        unsigned width = widthOf(o.getType());
        SimValue &out = result(o.getResult(), width);
        for (int64_t th = 0; th < NT; ++th)
          if (mask[th])
            for (unsigned w = 0; w < width; ++w)
              out.data[th * width + w] =
                  env.at(o.getElements()[w]).data[th];
        return success();
      })
      .Case<vector::ExtractOp>([&](vector::ExtractOp o) {
        if (!o.getDynamicPosition().empty() ||
            o.getStaticPosition().size() != 1 ||
            widthOf(o.getResult().getType()) != 1)
          return fail(o, "only static scalar extracts are simulated");
        int64_t pos = o.getStaticPosition()[0];
        const SimValue &src = env.at(o.getSource());
        SimValue &out = result(o.getResult(), 1);
        for (int64_t th = 0; th < NT; ++th)
          if (mask[th])
            out.data[th] = src.data[th * src.width + pos];
        return success();
      })
      .Case<vector::InsertOp>([&](vector::InsertOp o) {
        if (!o.getDynamicPosition().empty() ||
            o.getStaticPosition().size() != 1 ||
            widthOf(o.getValueToStore().getType()) != 1)
          return fail(o, "only static scalar inserts are simulated");
        int64_t pos = o.getStaticPosition()[0];
        const SimValue &src = env.at(o.getValueToStore());
        const SimValue &dst = env.at(o.getDest());
        unsigned width = dst.width;
        SimValue &out = result(o.getResult(), width);
        for (int64_t th = 0; th < NT; ++th)
          if (mask[th])
            for (unsigned w = 0; w < width; ++w)
              out.data[th * width + w] =
                  w == pos ? src.data[th] : dst.data[th * width + w];
        return success();
      })
      .Case<vector::ReductionOp>([&](vector::ReductionOp o) {
        const SimValue &src = env.at(o.getVector());
        auto kind = o.getKind();
        if (kind != vector::CombiningKind::ADD &&
            kind != vector::CombiningKind::MAXIMUMF)
          return fail(o, "reduction kind not simulated");
        SimValue &out = result(o.getResult(), 1);
        for (int64_t th = 0; th < NT; ++th) {
          if (!mask[th])
            continue;
          double acc = kind == vector::CombiningKind::ADD
                           ? 0.0
                           : -std::numeric_limits<double>::infinity();
          for (unsigned w = 0; w < src.width; ++w) {
            double x = src.data[th * src.width + w];
            acc = kind == vector::CombiningKind::ADD ? acc + x
                                                     : std::max(acc, x);
          }
          if (o.getAcc())
            acc = kind == vector::CombiningKind::ADD
                      ? acc + env.at(o.getAcc()).data[th]
                      : std::max(acc, env.at(o.getAcc()).data[th]);
          out.data[th] = round(o.getResult().getType(), acc);
        }
        return success();
      })
      .Case<gpu::ThreadIdOp>([&](gpu::ThreadIdOp o) {
        if (o.getDimension() != gpu::Dimension::x) {
          env[o.getResult()] = uniform(0.0);
          return success();
        }
        SimValue v = uniform(0.0);
        for (int64_t th = 0; th < NT; ++th)
          v.data[th] = th;
        env[o.getResult()] = std::move(v);
        return success();
      })
      .Case<gpu::LaneIdOp>([&](gpu::LaneIdOp o) {
        SimValue v = uniform(0.0);
        for (int64_t th = 0; th < NT; ++th)
          v.data[th] = th % 32;
        env[o.getResult()] = std::move(v);
        return success();
      })
      .Case<gpu::BlockIdOp>([&](gpu::BlockIdOp o) {
        env[o.getResult()] =
            uniform(o.getDimension() == gpu::Dimension::x ? block : 0);
        return success();
      })
      .Case<gpu::BlockDimOp>([&](gpu::BlockDimOp o) {
        env[o.getResult()] =
            uniform(o.getDimension() == gpu::Dimension::x ? NT : 1);
        return success();
      })
      .Case<gpu::GridDimOp>([&](gpu::GridDimOp o) {
        env[o.getResult()] = uniform(
            o.getDimension() == gpu::Dimension::x ? launch.B * launch.H : 1);
        return success();
      })
      .Case<gpu::BarrierOp>([&](gpu::BarrierOp o) {
        if (!converged(mask))
          return fail(o, "barrier in divergent code");
        ++epoch;
        return success();
      })
      .Case<gpu::ShuffleOp>([&](gpu::ShuffleOp o) {
        for (int64_t th = 0; th < NT; ++th)
          if (!mask[th])
            return fail(o, "shuffle with inactive lanes");
        const SimValue &value = env.at(o.getValue());
        const SimValue &offset = env.at(o.getOffset());
        const SimValue &width = env.at(o.getWidth());
        SimValue &out = result(o.getShuffleResult(), 1);
        SimValue &valid = result(o.getValid(), 1);
        for (int64_t th = 0; th < NT; ++th) {
          int64_t laneId = th % 32, base = th - laneId;
          int64_t w = int64_t(width.data[th]), off = int64_t(offset.data[th]);
          int64_t src;
          switch (o.getMode()) {
          case gpu::ShuffleMode::XOR: src = laneId ^ off; break;
          case gpu::ShuffleMode::UP: src = laneId - off; break;
          case gpu::ShuffleMode::DOWN: src = laneId + off; break;
          case gpu::ShuffleMode::IDX: src = off; break;
          }
          bool ok = src >= 0 && src < w && w <= 32;
          out.data[th] = value.data[ok ? base + src : th];
          valid.data[th] = ok;
        }
        return success();
      })
      .Case<memref::GetGlobalOp>([&](auto o) {
        env[o.getResult()] = uniform(0.0);
        return success();
      })
      .Case<memref::ReinterpretCastOp>([&](memref::ReinterpretCastOp o) {
        auto type = o.getType();
        if (type.getRank() != 1)
          return fail(o, "only 1-D shared arenas are simulated");
        int64_t size = type.hasStaticShape()
                           ? type.getNumElements()
                           : int64_t(env.at(o.getSizes()[0]).data[0]);
        shared.assign(size, std::nan(""));
        sharedState.assign(size, SharedCell());
        arena = o.getResult();
        env[o.getResult()] = uniform(0.0);
        return success();
      })
      .Case<memref::LoadOp>([&](memref::LoadOp o) {
        if (o.getMemref() != arena || o.getIndices().size() != 1)
          return fail(o, "load from an unknown memref");
        const SimValue &index = env.at(o.getIndices()[0]);
        SimValue &out = result(o.getResult(), 1);
        for (int64_t th = 0; th < NT; ++th) {
          if (!mask[th])
            continue;
          int64_t i = int64_t(index.data[th]);
          if (failed(sharedAccess(o, i, th, false)))
            return failure();
          out.data[th] = shared[i];
        }
        return success();
      })
      .Case<memref::StoreOp>([&](memref::StoreOp o) {
        if (o.getMemref() != arena || o.getIndices().size() != 1)
          return fail(o, "store to an unknown memref");
        const SimValue &index = env.at(o.getIndices()[0]);
        const SimValue &value = env.at(o.getValue());
        for (int64_t th = 0; th < NT; ++th) {
          if (!mask[th])
            continue;
          int64_t i = int64_t(index.data[th]);
          if (failed(sharedAccess(o, i, th, true)))
            return failure();
          shared[i] = value.data[th];
        }
        return success();
      })
      .Case<LLVM::GEPOp>([&](LLVM::GEPOp o) {
        if (o.getIndices().size() != 1)
          return fail(o, "only one-index GEPs are simulated");
        unsigned bytes = o.getElemType().getIntOrFloatBitWidth() / 8;
        const SimValue &base = env.at(o.getBase());
        auto index = *o.getIndices().begin();
        SimValue &out = result(o.getResult(), 1);
        for (int64_t th = 0; th < NT; ++th) {
          if (!mask[th])
            continue;
          double i = 0;
          if (auto value = dyn_cast<Value>(index))
            i = env.at(value).data[th];
          else
            i = double(cast<IntegerAttr>(index).getInt());
          out.data[th] = base.data[th] + i * bytes;
        }
        return success();
      })
      .Case<LLVM::LoadOp>([&](LLVM::LoadOp o) {
        unsigned bytes = o.getType().getIntOrFloatBitWidth() / 8;
        const SimValue &ptr = env.at(o.getAddr());
        SimValue &out = result(o.getResult(), 1);
        for (int64_t th = 0; th < NT; ++th) {
          if (!mask[th])
            continue;
          int64_t buffer, element;
          if (failed(globalAddress(o, ptr.data[th], bytes, buffer, element)))
            return failure();
          int64_t writer = blockWriter[buffer][element];
          if (writer >= 0 && writer != block)
            return fail(o, "block reads element " + Twine(element) +
                               " of '" + launch.names[buffer] +
                               "' that block " + Twine(writer) + " wrote");
          out.data[th] = round(o.getType(), launch.buffers[buffer][element]);
        }
        return success();
      })
      .Case<LLVM::StoreOp>([&](LLVM::StoreOp o) {
        Type type = o.getValue().getType();
        unsigned bytes = type.getIntOrFloatBitWidth() / 8;
        const SimValue &ptr = env.at(o.getAddr());
        const SimValue &value = env.at(o.getValue());
        for (int64_t th = 0; th < NT; ++th) {
          if (!mask[th])
            continue;
          int64_t buffer, element;
          if (failed(globalAddress(o, ptr.data[th], bytes, buffer, element)))
            return failure();
          int64_t &writer = blockWriter[buffer][element];
          if (writer >= 0 && writer != block)
            return fail(o, "blocks " + Twine(writer) + " and " + Twine(block) +
                               " both write element " + Twine(element) +
                               " of '" + launch.names[buffer] + "'");
          writer = block;
          launch.buffers[buffer][element] = value.data[th];
        }
        return success();
      })
      .Case<scf::ForOp>([&](scf::ForOp loop) { return execFor(loop, mask); })
      .Case<scf::IfOp>([&](scf::IfOp ifOp) { return execIf(ifOp, mask); })
      .Default([&](Operation *other) {
        return fail(other, "operation not simulated");
      });
}

LogicalResult Simulator::execFor(scf::ForOp loop,
                                 const std::vector<char> &mask) {
  const SimValue &lb = env.at(loop.getLowerBound());
  const SimValue &ub = env.at(loop.getUpperBound());
  const SimValue &step = env.at(loop.getStep());
  Block *body = loop.getBody();
  Value iv = loop.getInductionVar();
  SimValue ivValue = uniform(0.0);
  for (int64_t th = 0; th < NT; ++th)
    ivValue.data[th] = lb.data[th];
  // Current iteration values, per thread.
  SmallVector<SimValue> carried;
  for (Value init : loop.getInitArgs())
    carried.push_back(env.at(init));
  std::vector<char> active(NT);
  while (true) {
    bool any = false;
    for (int64_t th = 0; th < NT; ++th) {
      active[th] = mask[th] && ivValue.data[th] < ub.data[th];
      any |= active[th] != 0;
    }
    if (!any)
      break;
    env[iv] = ivValue;
    for (auto [arg, value] : llvm::zip(loop.getRegionIterArgs(), carried))
      env[arg] = value;
    SmallVector<SimValue> yielded;
    if (failed(execBlock(*body, active, yielded)))
      return failure();
    for (auto [value, next] : llvm::zip(carried, yielded))
      for (int64_t th = 0; th < NT; ++th)
        if (active[th])
          for (unsigned w = 0; w < value.width; ++w)
            value.data[th * value.width + w] =
                next.data[th * next.width + w];
    for (int64_t th = 0; th < NT; ++th)
      if (active[th])
        ivValue.data[th] += step.data[th];
  }
  for (auto [res, value] : llvm::zip(loop.getResults(), carried))
    env[res] = value;
  return success();
}

LogicalResult Simulator::execIf(scf::IfOp ifOp,
                                const std::vector<char> &mask) {
  const SimValue &cond = env.at(ifOp.getCondition());
  std::vector<char> thenMask(NT), elseMask(NT);
  bool anyThen = false, anyElse = false;
  for (int64_t th = 0; th < NT; ++th) {
    thenMask[th] = mask[th] && cond.data[th] != 0;
    elseMask[th] = mask[th] && cond.data[th] == 0;
    anyThen |= thenMask[th] != 0;
    anyElse |= elseMask[th] != 0;
  }
  SmallVector<SimValue> results;
  for (Value r : ifOp.getResults())
    results.push_back(uniform(std::nan(""), widthOf(r.getType())));
  auto runBranch = [&](Region &region, const std::vector<char> &branchMask,
                       bool any) -> LogicalResult {
    if (region.empty() || !any)
      return success();
    SmallVector<SimValue> yielded;
    if (failed(execBlock(region.front(), branchMask, yielded)))
      return failure();
    for (auto [res, y] : llvm::zip(results, yielded))
      for (int64_t th = 0; th < NT; ++th)
        if (branchMask[th])
          for (unsigned w = 0; w < res.width; ++w)
            res.data[th * res.width + w] = y.data[th * y.width + w];
    return success();
  };
  if (failed(runBranch(ifOp.getThenRegion(), thenMask, anyThen)) ||
      failed(runBranch(ifOp.getElseRegion(), elseMask, anyElse)))
    return failure();
  for (auto [r, value] : llvm::zip(ifOp.getResults(), results))
    env[r] = std::move(value);
  return success();
}

//===----------------------------------------------------------------------===//
// The pass
//===----------------------------------------------------------------------===//

struct TestFwpGpuKernelsPass
    : public ::fwp::test::impl::TestFwpGpuKernelsBase<TestFwpGpuKernelsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    OwningOpRef<ModuleOp> lowered = module.clone();
    PassManager pm(module.getContext());
    pm.addPass(createConvertFwpToGPU(ConvertFwpToGPUOptions{blockSize}));
    if (expandMath)
      pm.addNestedPass<gpu::GPUModuleOp>(createFwpGpuExpandMath());
    if (failed(pm.run(*lowered)))
      return signalPassFailure();

    std::mt19937_64 rng(seed);
    for (ScanOp scan : module.getOps<ScanOp>()) {
      gpu::GPUFuncOp kernel;
      lowered->walk([&](gpu::GPUFuncOp func) {
        auto name = func->getAttrOfType<StringAttr>(kGpuScanAttr);
        if (name && name.getValue() == scan.getSymName())
          kernel = func;
      });
      if (!kernel) {
        scan.emitError("no kernel was generated for this scan");
        return signalPassFailure();
      }
      if (failed(check(scan, kernel, rng)))
        return signalPassFailure();
    }
  }

  LogicalResult check(ScanOp scan, gpu::GPUFuncOp kernel,
                      std::mt19937_64 &rng) {
    Launch input;
    input.B = batch;
    input.H = heads;
    input.T = steps;
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    auto args = kernel->getAttrOfType<ArrayAttr>(kGpuArgsAttr);
    SmallVector<bool> isResult; // outputs and in/out states are compared
    for (Attribute attr : args) {
      auto arg = cast<DictionaryAttr>(attr);
      StringRef role = cast<StringAttr>(arg.get("role")).getValue();
      StringRef name = cast<StringAttr>(arg.get("name")).getValue();
      int64_t size = 1;
      for (Attribute dim : cast<ArrayAttr>(arg.get("shape"))) {
        if (auto s = dyn_cast<StringAttr>(dim))
          size *= s.getValue() == "B" ? input.B : input.H;
        else if (cast<IntegerAttr>(dim).getInt() < 0)
          size *= input.T;
        else
          size *= cast<IntegerAttr>(dim).getInt();
      }
      Buffer buf(size);
      StringRef kernelRole =
          cast<StringAttr>(kernel->getAttr(kGpuKernelRoleAttr)).getValue();
      bool written = role == "output" || role == "tape" || role == "grad_seq" ||
                     role == "deferred";
      bool inOut = role == "state" || role == "grad_state" ||
                   role == "grad_param" || role == "energy";
      // Tape buffers are outputs of forward_train and inputs of backward;
      // the deferred values outputs of backward and inputs of
      // backward_deferred.
      if ((role == "tape" && kernelRole == "backward") ||
          (role == "deferred" && kernelRole == "backward_deferred"))
        written = false;
      double scale = role == "param" ? 0.5 : inOut ? 0.3 : 1.0;
      for (double &x : buf)
        x = written ? std::nan("") : scale * unit(rng);
      input.names.push_back((role + ":" + name).str());
      input.buffers.push_back(std::move(buf));
      isResult.push_back(written || inOut);
    }

    Launch reference = input, simulated = input;
    // The kernel computes in its element type: give both the same inputs.
    for (Buffer &buf : simulated.buffers)
      for (double &x : buf)
        if (!std::isnan(x) && getElementTypeOrSelf(scan.getBodyBlock()
                                                        .getArgumentTypes()
                                                        .front())
                                   .isF32())
          x = double(float(x));
    reference.buffers = simulated.buffers;

    ReferenceEvaluator evaluator(scan);
    if (failed(evaluator.run(reference)))
      return failure();
    int64_t blockSize =
        cast<IntegerAttr>(kernel->getAttr(kGpuBlockSizeAttr)).getInt();
    Simulator simulator(kernel, simulated, blockSize);
    if (failed(simulator.run()))
      return emitError(scan.getLoc()) << "simulated kernel @" << kernel.getName()
                              << " failed: " << simulator.error;

    double maxError = 0;
    for (size_t i = 0; i < isResult.size(); ++i) {
      if (!isResult[i])
        continue;
      const Buffer &want = reference.buffers[i], &got = simulated.buffers[i];
      for (size_t j = 0; j < want.size(); ++j) {
        double error = std::fabs(got[j] - want[j]) / (1.0 + std::fabs(want[j]));
        if (std::isnan(error) || error > tol)
          return emitError(scan.getLoc())
                 << "kernel @" << kernel.getName() << " differs from the fwp "
                 << "semantics: " << input.names[i] << "[" << j
                 << "] = " << got[j] << ", expected " << want[j];
        maxError = std::max(maxError, error);
      }
    }
    llvm::outs() << "test-fwp-gpu-kernels: @" << kernel.getName() << " ok ("
                 << "B=" << batch << " H=" << heads << " T=" << steps
                 << ", block " << blockSize << ", max error ";
    llvm::outs() << llvm::format("%.1e", maxError) << ")\n";
    return success();
  }
};

} // namespace
