//===- FwpToCPU.cpp - Lower fwp.scan to a CPU function --------------------===//
//
// Every scan becomes a function that runs one (batch, head) pair over all T
// steps. Per-head vectors are `vector` values in registers; fast weights are
// memrefs, updated in place when the old value is dead, copied otherwise.
//
//===----------------------------------------------------------------------===//

#include "fwp/Conversion/Passes.h"
#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_CONVERTFWPTOCPU
#include "fwp/Conversion/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

/// The memref type of a buffer argument: `[T, n]` / `[T]` for per-step
/// values, the value's own shape (or `[1]` for a scalar) otherwise.
static MemRefType bufferType(Type type, bool perStep) {
  SmallVector<int64_t> shape;
  if (perStep)
    shape.push_back(ShapedType::kDynamic);
  Type element = type;
  if (auto vector = dyn_cast<VectorType>(type)) {
    shape.push_back(vector.getDimSize(0));
    element = vector.getElementType();
  } else if (auto weight = dyn_cast<FastWeightType>(type)) {
    shape.push_back(weight.getKeyDim());
    shape.push_back(weight.getValueDim());
    element = weight.getElementType();
  } else if (!perStep) {
    shape.push_back(1);
  }
  return MemRefType::get(shape, element);
}

class ScanLowering {
public:
  explicit ScanLowering(ScanOp scan) : scan(scan), b(scan.getContext()) {}

  LogicalResult run();

private:
  // Small builders.
  Value index(int64_t value) {
    return arith::ConstantIndexOp::create(b, loc, value);
  }
  Value constant(Type type, double value) {
    Type element = getElementTypeOrSelf(type);
    auto attr = b.getFloatAttr(element, value);
    if (auto vector = dyn_cast<VectorType>(type))
      return arith::ConstantOp::create(b, loc, vector,
                                       DenseElementsAttr::get(vector, attr));
    return arith::ConstantOp::create(b, loc, element, attr);
  }
  Value splat(Type like, Value scalar) {
    if (auto vector = dyn_cast<VectorType>(like))
      return vector::BroadcastOp::create(b, loc, vector, scalar);
    return scalar;
  }
  Value sum(Value vector) {
    return vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                       vector);
  }
  Value dot(Value x, Value y) {
    return sum(arith::MulFOp::create(b, loc, x, y));
  }
  Value exp(Value x) { return math::ExpOp::create(b, loc, x); }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value extract(Value vector, Value position) {
    return vector::ExtractOp::create(b, loc, vector, OpFoldResult(position));
  }
  Value row(Value matrix, Value e) {
    auto type = cast<MemRefType>(matrix.getType());
    return vector::LoadOp::create(
        b, loc, VectorType::get({type.getDimSize(1)}, type.getElementType()),
        matrix, ValueRange{e, index(0)});
  }
  /// Emits `for e in [0, K)` over the rows of a K x V matrix.
  template <typename Fn>
  scf::ForOp forRows(Value matrix, ValueRange inits, Fn body) {
    int64_t rows = cast<MemRefType>(matrix.getType()).getDimSize(0);
    return scf::ForOp::create(
        b, loc, index(0), index(rows), index(1), inits,
        [&](OpBuilder &nested, Location, Value e, ValueRange iters) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPoint(nested.getInsertionBlock(),
                              nested.getInsertionPoint());
          SmallVector<Value> results = body(e, iters);
          scf::YieldOp::create(b, loc, results);
        });
  }

  // Matrices.
  /// A matrix buffer for one op, allocated once per call before the time
  /// loop (on the heap: d = 128 matrices would crowd a worker thread's stack)
  /// and freed after it.
  Value scratchMatrix(Type type) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(scratchInsertionPoint);
    Value buffer = memref::AllocOp::create(b, loc, bufferType(type, false));
    scratchBuffers.push_back(buffer);
    return buffer;
  }
  bool canOverwrite(Value matrix, Operation *writer) {
    if (readOnly.contains(lowered.lookup(matrix)))
      return false;
    for (Operation *user : matrix.getUsers())
      if (user != writer && !user->isBeforeInBlock(writer))
        return false;
    return true;
  }
  /// The buffer `writer` may update for its result: the operand's own buffer
  /// when it is dead afterwards, else a scratch copy.
  Value writableCopy(Value matrix, Operation *writer) {
    Value buffer = lowered.lookup(matrix);
    if (canOverwrite(matrix, writer))
      return buffer;
    Value copy = scratchMatrix(matrix.getType());
    if (cast<MemRefType>(buffer.getType()).getLayout().isIdentity())
      memref::CopyOp::create(b, loc, buffer, copy);
    else
      copyRows(buffer, copy); // a step's slice of a [T, K, V] input
    return copy;
  }
  Value readMatrix(Value matrix, Value query) {
    // y[m] = sum_e W[e, m] q[e]
    auto type = cast<MemRefType>(matrix.getType());
    auto resultType =
        VectorType::get({type.getDimSize(1)}, type.getElementType());
    Value zero = constant(resultType, 0.0);
    return forRows(matrix, zero,
                   [&](Value e, ValueRange acc) -> SmallVector<Value> {
                     Value qe = splat(resultType, extract(query, e));
                     return {vector::FMAOp::create(b, loc, row(matrix, e), qe,
                                                   acc[0])};
                   })
        .getResult(0);
  }
  /// DPFP's rectified input r = [relu(x), relu(-x)].
  Value dpfpRectified(Value x) {
    auto type = cast<VectorType>(x.getType());
    Value zero = constant(type, 0.0);
    Value pos = arith::MaximumFOp::create(b, loc, x, zero);
    Value neg = arith::MaximumFOp::create(
        b, loc, arith::NegFOp::create(b, loc, x), zero);
    SmallVector<int64_t> concat;
    for (int64_t i = 0; i < 2 * type.getDimSize(0); ++i)
      concat.push_back(i);
    return vector::ShuffleOp::create(b, loc, pos, neg, concat);
  }
  /// Layer-norm statistics: returns ((x - mean) * rstd, rstd).
  std::pair<Value, Value> normalize(Value x, double eps) {
    Type type = x.getType();
    Type element = getElementTypeOrSelf(type);
    Value count = constant(element, cast<VectorType>(type).getDimSize(0));
    Value mean = div(sum(x), count);
    Value centered = sub(x, splat(type, mean));
    Value var = div(dot(centered, centered), count);
    Value rstd =
        math::RsqrtOp::create(b, loc, add(var, constant(element, eps)));
    return {mul(centered, splat(type, rstd)), rstd};
  }
  Value readTransposedMatrix(Value matrix, Value x) {
    // y[e] = sum_m W[e, m] x[m]
    auto type = cast<MemRefType>(matrix.getType());
    auto resultType =
        VectorType::get({type.getDimSize(0)}, type.getElementType());
    Value zero = constant(resultType, 0.0);
    return forRows(matrix, zero,
                   [&](Value e, ValueRange acc) -> SmallVector<Value> {
                     Value value = dot(row(matrix, e), x);
                     return {vector::InsertOp::create(b, loc, value, acc[0],
                                                      OpFoldResult(e))};
                   })
        .getResult(0);
  }
  void addOuterInPlace(Value matrix, Value key, Value value) {
    // W[e, :] += k[e] v
    forRows(matrix, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      Value ke = splat(value.getType(), extract(key, e));
      Value updated = vector::FMAOp::create(b, loc, ke, value, row(matrix, e));
      vector::StoreOp::create(b, loc, updated, matrix, ValueRange{e, index(0)});
      return {};
    });
  }
  void fillZero(Value matrix) {
    auto type = cast<MemRefType>(matrix.getType());
    Value zero = constant(
        VectorType::get({type.getDimSize(1)}, type.getElementType()), 0.0);
    forRows(matrix, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      vector::StoreOp::create(b, loc, zero, matrix, ValueRange{e, index(0)});
      return {};
    });
  }
  void combineInPlace(Value target, Value other, bool subtract) {
    forRows(target, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      Value lhs = row(target, e), rhs = row(other, e);
      Value combined = subtract ? sub(lhs, rhs) : add(lhs, rhs);
      vector::StoreOp::create(b, loc, combined, target, ValueRange{e, index(0)});
      return {};
    });
  }

  /// Step t's [K, V] matrix of a [T, K, V] buffer.
  Value stepSlice(Value buffer, Value t) {
    auto type = cast<MemRefType>(buffer.getType());
    int64_t rows = type.getDimSize(1), cols = type.getDimSize(2);
    auto resultType = cast<MemRefType>(memref::SubViewOp::inferRankReducedResultType(
        {rows, cols}, type, ArrayRef<OpFoldResult>{t, b.getIndexAttr(0), b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(rows), b.getIndexAttr(cols)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1), b.getIndexAttr(1)}));
    return memref::SubViewOp::create(
        b, loc, resultType, buffer,
        ArrayRef<OpFoldResult>{t, b.getIndexAttr(0), b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(rows), b.getIndexAttr(cols)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1), b.getIndexAttr(1)});
  }
  /// target[e, :] = source[e, :] for every row (any strided layouts).
  void copyRows(Value source, Value target) {
    forRows(source, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      vector::StoreOp::create(b, loc, row(source, e), target, ValueRange{e, index(0)});
      return {};
    });
  }

  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerBody(Value t, ValueRange vectorStates,
                          SmallVectorImpl<Value> &nextVectorStates);

  ScanOp scan;
  OpBuilder b;
  Location loc = scan.getLoc();
  /// fwp value -> lowered value (vector/scalar SSA value, or a memref).
  llvm::DenseMap<Value, Value> lowered;
  llvm::DenseSet<Value> readOnly;
  Operation *scratchInsertionPoint = nullptr;
  SmallVector<Value> scratchBuffers;

  SmallVector<Value> seqBuffers, paramBuffers, stateBuffers, outputBuffers;
};

LogicalResult ScanLowering::lowerOp(Operation *op) {
  loc = op->getLoc();
  auto in = [&](Value v) { return lowered.lookup(v); };
  auto set = [&](Value result, Value value) { lowered[result] = value; };

  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](EluPlusOneOp o) {
        Value x = in(o.getX());
        Value positive = arith::CmpFOp::create(
            b, loc, arith::CmpFPredicate::OGT, x, constant(x.getType(), 0.0));
        set(o, arith::SelectOp::create(b, loc, positive,
                                       add(x, constant(x.getType(), 1.0)),
                                       exp(x)));
        return success();
      })
      .Case([&](SumNormOp o) {
        Value x = in(o.getX());
        Value total = add(sum(x), constant(getElementTypeOrSelf(x.getType()),
                                           o.getEps().convertToDouble()));
        set(o, div(x, splat(x.getType(), total)));
        return success();
      })
      .Case([&](SoftmaxOp o) {
        Value x = in(o.getX());
        Value max = vector::ReductionOp::create(
            b, loc, vector::CombiningKind::MAXIMUMF, x);
        Value e = exp(sub(x, splat(x.getType(), max)));
        set(o, div(e, splat(x.getType(), sum(e))));
        return success();
      })
      .Case([&](DpfpOp o) {
        // r = [relu(x), relu(-x)]; out_s[i] = r[i] r[(i + s) mod 2n].
        Value x = in(o.getX());
        auto type = cast<VectorType>(x.getType());
        int64_t n2 = 2 * type.getDimSize(0);
        Value r = dpfpRectified(x);
        auto resultType = cast<VectorType>(o.getResult().getType());
        Value result = constant(resultType, 0.0);
        for (int64_t s = 1, nu = o.getNu(); s <= nu; ++s) {
          SmallVector<int64_t> rolled;
          for (int64_t i = 0; i < n2; ++i)
            rolled.push_back((i + s) % n2);
          Value shifted = vector::ShuffleOp::create(b, loc, r, r, rolled);
          result = vector::InsertStridedSliceOp::create(
              b, loc, mul(r, shifted), result,
              ArrayRef<int64_t>{(s - 1) * n2}, ArrayRef<int64_t>{1});
        }
        set(o, result);
        return success();
      })
      .Case([&](DpfpGradOp o) {
        Value x = in(o.getX()), g = in(o.getGrad());
        auto type = cast<VectorType>(x.getType());
        int64_t n = type.getDimSize(0), n2 = 2 * n;
        auto rType = VectorType::get({n2}, type.getElementType());
        Value zero = constant(type, 0.0);
        Value r = dpfpRectified(x);
        Value dr = constant(rType, 0.0);
        for (int64_t s = 1, nu = o.getNu(); s <= nu; ++s) {
          SmallVector<int64_t> forward, backward;
          for (int64_t i = 0; i < n2; ++i) {
            forward.push_back((i + s) % n2);
            backward.push_back((i - s + n2) % n2);
          }
          Value gs = vector::ExtractStridedSliceOp::create(
              b, loc, g, ArrayRef<int64_t>{(s - 1) * n2}, ArrayRef<int64_t>{n2},
              ArrayRef<int64_t>{1});
          // d r[i] += g_s[i] r[i+s];  d r[i+s] += g_s[i] r[i].
          Value shifted = vector::ShuffleOp::create(b, loc, r, r, forward);
          dr = add(dr, mul(gs, shifted));
          Value gr = mul(gs, r);
          dr = add(dr, vector::ShuffleOp::create(b, loc, gr, gr, backward));
        }
        Value drPos = vector::ExtractStridedSliceOp::create(
            b, loc, dr, ArrayRef<int64_t>{0}, ArrayRef<int64_t>{n},
            ArrayRef<int64_t>{1});
        Value drNeg = vector::ExtractStridedSliceOp::create(
            b, loc, dr, ArrayRef<int64_t>{n}, ArrayRef<int64_t>{n},
            ArrayRef<int64_t>{1});
        Value isPos = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT,
                                            x, zero);
        Value isNeg = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT,
                                            x, zero);
        Value dx = sub(arith::SelectOp::create(b, loc, isPos, drPos, zero),
                       arith::SelectOp::create(b, loc, isNeg, drNeg, zero));
        set(o, dx);
        return success();
      })
      .Case([&](SigmoidOp o) {
        Value x = in(o.getX());
        Value one = constant(x.getType(), 1.0);
        set(o, div(one, add(one, exp(arith::NegFOp::create(b, loc, x)))));
        return success();
      })
      .Case([&](TanhOp o) {
        set(o, math::TanhOp::create(b, loc, in(o.getX())));
        return success();
      })
      .Case([&](NegOp o) {
        set(o, arith::NegFOp::create(b, loc, in(o.getX())));
        return success();
      })
      .Case<AddOp, SubOp>([&](Operation *binary) {
        Value lhs = binary->getOperand(0), rhs = binary->getOperand(1);
        bool subtract = isa<SubOp>(binary);
        if (isa<FastWeightType>(lhs.getType())) {
          Value target = writableCopy(lhs, binary);
          combineInPlace(target, in(rhs), subtract);
          set(binary->getResult(0), target);
        } else {
          set(binary->getResult(0),
              subtract ? sub(in(lhs), in(rhs)) : add(in(lhs), in(rhs)));
        }
        return success();
      })
      .Case([&](MulOp o) {
        set(o, mul(in(o.getLhs()), in(o.getRhs())));
        return success();
      })
      .Case([&](DivOp o) {
        set(o, div(in(o.getLhs()), in(o.getRhs())));
        return success();
      })
      .Case([&](ScaleOp o) {
        Value x = in(o.getX());
        set(o, mul(x, splat(x.getType(), in(o.getFactor()))));
        return success();
      })
      .Case([&](DotOp o) {
        set(o, dot(in(o.getLhs()), in(o.getRhs())));
        return success();
      })
      .Case([&](LayerNormOp o) {
        auto [normed, rstd] =
            normalize(in(o.getX()), o.getEps().convertToDouble());
        set(o, add(mul(normed, in(o.getWeight())), in(o.getBias())));
        return success();
      })
      .Case([&](LayerNormGradOp o) {
        Value x = in(o.getX()), w = in(o.getWeight()), g = in(o.getGrad());
        Type type = x.getType();
        int64_t n = cast<VectorType>(type).getDimSize(0);
        Type element = getElementTypeOrSelf(type);
        Value count = constant(element, n);
        auto [normed, rstd] = normalize(x, o.getEps().convertToDouble());
        Value dNormed = mul(g, w);
        Value meanD = div(sum(dNormed), count);
        Value meanDN = div(dot(dNormed, normed), count);
        Value dx = mul(splat(type, rstd),
                       sub(sub(dNormed, splat(type, meanD)),
                           mul(normed, splat(type, meanDN))));
        set(o.getGradX(), dx);
        set(o.getGradWeight(), mul(g, normed));
        set(o.getGradBias(), g);
        return success();
      })
      .Case([&](ConstantOp o) {
        set(o, constant(o.getType(), o.getValue().convertToDouble()));
        return success();
      })
      .Case([&](ZerosOp o) {
        if (isa<FastWeightType>(o.getType())) {
          Value buffer = scratchMatrix(o.getType());
          fillZero(buffer);
          set(o, buffer);
        } else {
          set(o, constant(o.getType(), 0.0));
        }
        return success();
      })
      .Case([&](EluPlusOneGradOp o) {
        Value x = in(o.getX());
        Value positive = arith::CmpFOp::create(
            b, loc, arith::CmpFPredicate::OGT, x, constant(x.getType(), 0.0));
        Value slope = arith::SelectOp::create(
            b, loc, positive, constant(x.getType(), 1.0), exp(x));
        set(o, mul(in(o.getGrad()), slope));
        return success();
      })
      .Case([&](SoftmaxGradOp o) {
        Value y = in(o.getX()), g = in(o.getGrad());
        set(o, mul(y, sub(g, splat(y.getType(), dot(y, g)))));
        return success();
      })
      .Case([&](SumNormGradOp o) {
        Value x = in(o.getX()), g = in(o.getGrad());
        Type element = getElementTypeOrSelf(x.getType());
        Value total =
            add(sum(x), constant(element, o.getEps().convertToDouble()));
        Value correction = div(dot(g, x), total);
        set(o, div(sub(g, splat(x.getType(), correction)),
                   splat(x.getType(), total)));
        return success();
      })
      .Case([&](SigmoidGradOp o) {
        Value y = in(o.getY());
        set(o, mul(in(o.getGrad()),
                   mul(y, sub(constant(y.getType(), 1.0), y))));
        return success();
      })
      .Case([&](TanhGradOp o) {
        Value y = in(o.getY());
        set(o, mul(in(o.getGrad()), sub(constant(y.getType(), 1.0), mul(y, y))));
        return success();
      })
      .Case([&](ReadOp o) {
        set(o, readMatrix(in(o.getWeight()), in(o.getQuery())));
        return success();
      })
      .Case([&](ReadTransposedOp o) {
        set(o, readTransposedMatrix(in(o.getWeight()), in(o.getValue())));
        return success();
      })
      .Case([&](SqrtOp o) {
        set(o, math::SqrtOp::create(b, loc, in(o.getX())));
        return success();
      })
      .Case([&](ScaleRowsOp o) {
        // W[e, :] *= a[e]
        Value target = writableCopy(o.getWeight(), o);
        Value factors = in(o.getFactors());
        forRows(target, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
          Value row_ = row(target, e);
          Value scaled = mul(row_, splat(row_.getType(), extract(factors, e)));
          vector::StoreOp::create(b, loc, scaled, target, ValueRange{e, index(0)});
          return {};
        });
        set(o, target);
        return success();
      })
      .Case([&](RowDotOp o) {
        // y[e] = A[e, :] . B[e, :]
        Value lhs = in(o.getLhs()), rhs = in(o.getRhs());
        Value zero = constant(o.getType(), 0.0);
        set(o, forRows(lhs, zero,
                       [&](Value e, ValueRange acc) -> SmallVector<Value> {
                         Value value = dot(row(lhs, e), row(rhs, e));
                         return {vector::InsertOp::create(b, loc, value, acc[0],
                                                          OpFoldResult(e))};
                       })
                   .getResult(0));
        return success();
      })
      .Case([&](WriteSumOp o) {
        Value target = writableCopy(o.getWeight(), o);
        addOuterInPlace(target, in(o.getKey()), in(o.getValue()));
        set(o, target);
        return success();
      })
      .Case([&](WriteDeltaOp o) {
        Value key = in(o.getKey()), value = in(o.getValue());
        Value retrieved = readMatrix(in(o.getWeight()), key);
        Value delta = mul(sub(value, retrieved),
                          splat(value.getType(), in(o.getBeta())));
        Value target = writableCopy(o.getWeight(), o);
        addOuterInPlace(target, key, delta);
        set(o.getNewWeight(), target);
        set(o.getRetrieved(), retrieved);
        return success();
      })
      .Default([&](Operation *other) {
        return other->emitOpError() << "has no CPU lowering";
      });
}

LogicalResult ScanLowering::lowerBody(Value t, ValueRange vectorStates,
                                      SmallVectorImpl<Value> &nextVectorStates) {
  Block &body = scan.getBodyBlock();
  for (auto [arg, buffer] : llvm::zip(scan.getSeqArgs(), seqBuffers)) {
    if (auto vector = dyn_cast<VectorType>(arg.getType())) {
      lowered[arg] = vector::LoadOp::create(b, loc, vector, buffer,
                                            ValueRange{t, index(0)});
    } else if (isa<FastWeightType>(arg.getType())) {
      // A matrix per step (a stored state): step t's [K, V] slice, read only.
      Value slice = stepSlice(buffer, t);
      readOnly.insert(slice);
      lowered[arg] = slice;
    } else
      lowered[arg] = memref::LoadOp::create(b, loc, buffer, ValueRange{t});
  }
  unsigned vectorIndex = 0;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      lowered[arg] = buffer;
    else
      lowered[arg] = vectorStates[vectorIndex++];
  }
  for (Operation &op : body.without_terminator())
    if (failed(lowerOp(&op)))
      return failure();

  loc = scan.getLoc();
  YieldOp yield = scan.getYield();
  unsigned numStates = scan.getNumStates();
  // Outputs first: a matrix output may be a state's value at t - 1, which
  // the state copies below overwrite.
  for (auto [value, buffer] :
       llvm::zip(yield.getValues().drop_front(numStates), outputBuffers)) {
    Value out = lowered.lookup(value);
    if (isa<VectorType>(out.getType()))
      vector::StoreOp::create(b, loc, out, buffer, ValueRange{t, index(0)});
    else if (isa<FloatType>(out.getType()))
      memref::StoreOp::create(b, loc, out, buffer, ValueRange{t});
    else
      copyRows(out, stepSlice(buffer, t));
  }
  llvm::DenseSet<Value> stateBufferSet(stateBuffers.begin(), stateBuffers.end());
  for (unsigned i = 0; i < numStates; ++i) {
    Value value = lowered.lookup(yield.getValues()[i]);
    if (!isa<FastWeightType>(scan.getStateArgs()[i].getType())) {
      nextVectorStates.push_back(value);
      continue;
    }
    if (value == stateBuffers[i])
      continue;
    if (stateBufferSet.contains(value))
      return yield.emitOpError()
             << "matrix state #" << i
             << " takes the buffer of another matrix state; the CPU lowering "
                "does not support exchanging states";
    memref::CopyOp::create(b, loc, value, stateBuffers[i]);
  }
  return success();
}

LogicalResult ScanLowering::run() {
  ModuleOp module = scan->getParentOfType<ModuleOp>();
  SmallVector<Type> argTypes{b.getIndexType()};
  for (BlockArgument arg : scan.getSeqArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/true));
  for (BlockArgument arg : scan.getParamArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/false));
  for (BlockArgument arg : scan.getStateArgs())
    argTypes.push_back(bufferType(arg.getType(), /*perStep=*/false));
  for (Attribute type : scan.getOutputTypes())
    argTypes.push_back(
        bufferType(cast<TypeAttr>(type).getValue(), /*perStep=*/true));

  b.setInsertionPoint(scan);
  auto func = func::FuncOp::create(
      b, loc, scan.getSymName(), b.getFunctionType(argTypes, TypeRange{}));
  func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  for (StringRef attr : {"fwp.role", "fwp.forward"})
    if (Attribute value = scan->getAttr(attr))
      func->setAttr(attr, value);
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);

  ValueRange args = entry->getArguments();
  Value count = args[0];
  unsigned next = 1;
  auto take = [&](unsigned n, SmallVectorImpl<Value> &into) {
    llvm::append_range(into, args.slice(next, n));
    next += n;
  };
  take(scan.getNumSeq(), seqBuffers);
  take(scan.getNumParams(), paramBuffers);
  take(scan.getNumStates(), stateBuffers);
  take(scan.getNumOutputs(), outputBuffers);
  readOnly.insert(paramBuffers.begin(), paramBuffers.end());
  readOnly.insert(seqBuffers.begin(), seqBuffers.end());

  // Params and the vector states' initial values, read once.
  for (auto [arg, buffer] : llvm::zip(scan.getParamArgs(), paramBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      lowered[arg] = buffer;
    else if (auto vector = dyn_cast<VectorType>(arg.getType()))
      lowered[arg] =
          vector::LoadOp::create(b, loc, vector, buffer, ValueRange{index(0)});
    else
      lowered[arg] = memref::LoadOp::create(b, loc, buffer, ValueRange{index(0)});
  }
  SmallVector<Value> initialVectorStates;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      continue;
    if (auto vector = dyn_cast<VectorType>(arg.getType()))
      initialVectorStates.push_back(
          vector::LoadOp::create(b, loc, vector, buffer, ValueRange{index(0)}));
    else
      initialVectorStates.push_back(
          memref::LoadOp::create(b, loc, buffer, ValueRange{index(0)}));
  }

  // Scratch matrices are allocated before the loop, not in every step.
  Value zero = index(0), one = index(1);
  scratchInsertionPoint = zero.getDefiningOp();
  LogicalResult status = success();
  auto loop = scf::ForOp::create(
      b, loc, zero, count, one, initialVectorStates,
      [&](OpBuilder &nested, Location, Value i, ValueRange iters) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value t = i;
        if (scan.getReverse())
          t = arith::SubIOp::create(
              b, loc, arith::SubIOp::create(b, loc, count, one), i);
        SmallVector<Value> nextStates;
        status = lowerBody(t, iters, nextStates);
        if (failed(status))
          nextStates.assign(iters.begin(), iters.end());
        scf::YieldOp::create(b, loc, nextStates);
      });
  if (failed(status)) {
    func->erase();
    return failure();
  }
  loc = scan.getLoc();
  b.setInsertionPointAfter(loop);
  unsigned vectorIndex = 0;
  for (auto [arg, buffer] : llvm::zip(scan.getStateArgs(), stateBuffers)) {
    if (isa<FastWeightType>(arg.getType()))
      continue;
    Value final = loop.getResult(vectorIndex++);
    if (isa<VectorType>(arg.getType()))
      vector::StoreOp::create(b, loc, final, buffer, ValueRange{index(0)});
    else
      memref::StoreOp::create(b, loc, final, buffer, ValueRange{index(0)});
  }
  for (Value buffer : scratchBuffers)
    memref::DeallocOp::create(b, loc, buffer);
  func::ReturnOp::create(b, loc);
  (void)module;
  return success();
}

struct ConvertFwpToCPUPass
    : public mlir::fwp::impl::ConvertFwpToCPUBase<ConvertFwpToCPUPass> {
  void runOnOperation() override {
    SmallVector<ScanOp> scans(getOperation().getOps<ScanOp>());
    for (ScanOp scan : scans) {
      ScanLowering lowering(scan);
      if (failed(lowering.run()))
        return signalPassFailure();
      scan->erase();
    }
  }
};

} // namespace
