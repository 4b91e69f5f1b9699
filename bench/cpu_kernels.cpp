//===- cpu_kernels.cpp - CPU kernels against the core's FMA peak (issue 18) -===//
//
//   fwp-bench-kernels --artifacts DIR [--baseline DIR | --baseline-json F.json]
//                     [--models M ...] [--shapes B,H,T,d ...] [--repeats N]
//                     [--eager-repeats N] [--skip-eager] [--chunk C] [--out F.json]
//
// For every model of models/ and every shape, one thread, times forward +
// backward (`y.sum().backward()`, median after a warm-up) of
//   - the compiled kernels in DIR/<model>_d<d>.fwpk ("current"),
//   - the same layer compiled by an older fwp in the --baseline folder (the
//     kernels before issue 18; interleaved with the current ones in this
//     process), or their times recorded by an earlier run (--baseline-json),
//   - the eager reference (fwp::makeReferenceLayer, which has every model),
//   - for delta_net, a chunkwise delta rule in plain LibTorch (the WY / UT
//     form, written below from the math), checked against the compiled
//     delta_net (max |y| difference at the benchmark shape, and output and
//     gradient differences at T = 100, not a multiple of the chunk),
// and measures the core's peak in the same process: an FMA micro-benchmark
// in the widest vector ISA the CPU has at run time, and a LibTorch SGEMM
// 1024^3; the peak is the higher of the two. Each time is also given in
// GFLOP/s by the flop count of forwardMultiplyAdds() (docs/benchmarks.md,
// "CPU kernels vs the core's peak") and as a percentage of the peak.
// Prints JSON (progress on stderr). Not a test: no thresholds.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/CompiledLayer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include <torch/version.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FWP_BENCH_X86 1
#endif

namespace {

using torch::Tensor;
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

//===----------------------------------------------------------------------===//
// The flop count
//===----------------------------------------------------------------------===//

/// Multiply-adds of the fast-weight (matrix-sized) ops of one forward step of
/// one (batch, head), counted from models/<model>.mlir. Per op on an
/// m x n fast weight: `read` m·n, `write_sum` m·n (the rank-1 update),
/// `write_delta` 2·m·n (the retrieval of the old value and the rank-1
/// update); `scale_weight` / `scale_rows` count 0 (the decay fuses into the
/// write: a·W + k ⊗ u is one multiply-add per element, and read(a·W, k) =
/// a·read(W, k)); vector-sized work (feature maps, gates, norms) is not
/// counted. The backward counts 3x the forward (for delta_net its 9 d²-sized
/// multiply-adds: undo the write, the read's two gradients, the write's
/// gradients), and a multiply-add is 2 flops, so
///   flops per step and (b, h) = 2 · (1 + 3) · forwardMultiplyAdds.
/// delta_net: 3 d² multiply-adds, 24 d² flops per step.
double forwardMultiplyAdds(const std::string &model, const fwp::Dims &dims) {
  const double d = double(dims.at("d"));
  const double dd = d * d;
  if (model == "linear_transformer")
    return 2 * dd; // write_sum + read
  if (model == "delta_net")
    return 3 * dd; // write_delta + read
  if (model == "delta_mlp") {
    const double ff = double(dims.at("d_ff"));
    return 6 * d * ff; // (write_delta + read) on W1 [d, d_ff] and on W2 [d_ff, d]
  }
  if (model == "delta_rnn")
    return 6 * dd; // (write_delta + read) on W and on R
  if (model == "delta_lstm")
    return 18 * dd; // (write_delta + read) on W_i, W_u, W_o, R_i, R_u, R_o
  if (model == "rdn")
    return 6 * dd; // reads of R_q, R_k, R_v + write_delta + read on W
  if (model == "gated_delta_net")
    return 3 * dd; // scale_weight (fused) + write_delta + read
  if (model == "retnet")
    return 2 * dd; // scale_weight (fused) + write_sum + read
  if (model == "gla")
    return 2 * dd; // scale_rows (fused) + write_sum + read
  if (model == "delta_product")
    return 5 * dd; // two write_delta + read
  throw fwp::Error("no flop count written down for model '" + model +
                   "' (bench/cpu_kernels.cpp, forwardMultiplyAdds)");
}

double flopsOf(const std::string &model, const fwp::Dims &dims, int64_t B, int64_t H,
               int64_t T) {
  return 2.0 * (1 + 3) * forwardMultiplyAdds(model, dims) * double(B * H * T);
}

//===----------------------------------------------------------------------===//
// The core's peak
//===----------------------------------------------------------------------===//

volatile float fmaSink = 0;

#ifdef FWP_BENCH_X86
/// `iterations` rounds of 16 independent AVX-512 FMA chains (16 lanes each):
/// enough chains to cover the FMA latency on two FMA ports. Returns flops.
__attribute__((target("avx512f"))) double fmaAvx512(int64_t iterations) {
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-6f);
  __m512 a0 = _mm512_set1_ps(0.0f), a1 = _mm512_set1_ps(0.1f), a2 = _mm512_set1_ps(0.2f),
         a3 = _mm512_set1_ps(0.3f), a4 = _mm512_set1_ps(0.4f), a5 = _mm512_set1_ps(0.5f),
         a6 = _mm512_set1_ps(0.6f), a7 = _mm512_set1_ps(0.7f), a8 = _mm512_set1_ps(0.8f),
         a9 = _mm512_set1_ps(0.9f), a10 = _mm512_set1_ps(1.0f), a11 = _mm512_set1_ps(1.1f),
         a12 = _mm512_set1_ps(1.2f), a13 = _mm512_set1_ps(1.3f), a14 = _mm512_set1_ps(1.4f),
         a15 = _mm512_set1_ps(1.5f);
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = _mm512_fmadd_ps(a0, x, y);
    a1 = _mm512_fmadd_ps(a1, x, y);
    a2 = _mm512_fmadd_ps(a2, x, y);
    a3 = _mm512_fmadd_ps(a3, x, y);
    a4 = _mm512_fmadd_ps(a4, x, y);
    a5 = _mm512_fmadd_ps(a5, x, y);
    a6 = _mm512_fmadd_ps(a6, x, y);
    a7 = _mm512_fmadd_ps(a7, x, y);
    a8 = _mm512_fmadd_ps(a8, x, y);
    a9 = _mm512_fmadd_ps(a9, x, y);
    a10 = _mm512_fmadd_ps(a10, x, y);
    a11 = _mm512_fmadd_ps(a11, x, y);
    a12 = _mm512_fmadd_ps(a12, x, y);
    a13 = _mm512_fmadd_ps(a13, x, y);
    a14 = _mm512_fmadd_ps(a14, x, y);
    a15 = _mm512_fmadd_ps(a15, x, y);
  }
  __m512 sum = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                    _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                    _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));
  fmaSink = _mm512_reduce_add_ps(sum);
  return 2.0 * 16 * 16 * double(iterations);
}

/// The same with 12 AVX2 chains of 8 lanes (16 ymm registers in all).
__attribute__((target("avx2,fma"))) double fmaAvx2(int64_t iterations) {
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-6f);
  __m256 a0 = _mm256_set1_ps(0.0f), a1 = _mm256_set1_ps(0.1f), a2 = _mm256_set1_ps(0.2f),
         a3 = _mm256_set1_ps(0.3f), a4 = _mm256_set1_ps(0.4f), a5 = _mm256_set1_ps(0.5f),
         a6 = _mm256_set1_ps(0.6f), a7 = _mm256_set1_ps(0.7f), a8 = _mm256_set1_ps(0.8f),
         a9 = _mm256_set1_ps(0.9f), a10 = _mm256_set1_ps(1.0f), a11 = _mm256_set1_ps(1.1f);
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = _mm256_fmadd_ps(a0, x, y);
    a1 = _mm256_fmadd_ps(a1, x, y);
    a2 = _mm256_fmadd_ps(a2, x, y);
    a3 = _mm256_fmadd_ps(a3, x, y);
    a4 = _mm256_fmadd_ps(a4, x, y);
    a5 = _mm256_fmadd_ps(a5, x, y);
    a6 = _mm256_fmadd_ps(a6, x, y);
    a7 = _mm256_fmadd_ps(a7, x, y);
    a8 = _mm256_fmadd_ps(a8, x, y);
    a9 = _mm256_fmadd_ps(a9, x, y);
    a10 = _mm256_fmadd_ps(a10, x, y);
    a11 = _mm256_fmadd_ps(a11, x, y);
  }
  __m256 sum = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                    _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7))),
      _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  fmaSink = total;
  return 2.0 * 8 * 12 * double(iterations);
}
#endif

/// The FMA micro-benchmark in the widest ISA this CPU supports (run-time
/// check): {"isa", "gflops"} (best of 5 runs of ~0.1 s), or isa "none".
nlohmann::json measureFmaPeak() {
  std::function<double(int64_t)> kernel;
  std::string isa = "none";
#ifdef FWP_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    kernel = fmaAvx512;
    isa = "avx512f";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    kernel = fmaAvx2;
    isa = "avx2+fma";
  }
#endif
  if (!kernel)
    return {{"isa", isa}, {"gflops", nullptr}};
  kernel(1 << 20); // warm-up (and the clock's ramp to the vector frequency)
  double best = 0;
  const int64_t iterations = 20'000'000;
  for (int run = 0; run < 5; ++run) {
    auto start = Clock::now();
    double flops = kernel(iterations);
    best = std::max(best, flops / secondsSince(start) / 1e9);
  }
  return {{"isa", isa}, {"accumulators", isa == "avx512f" ? 16 : 12}, {"gflops", best}};
}

/// LibTorch SGEMM, 1024 x 1024 x 1024, f32, best of 7 (current thread count).
double measureSgemmGflops() {
  const int64_t n = 1024;
  Tensor a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  torch::mm_out(c, a, b);
  double best = 0;
  for (int run = 0; run < 7; ++run) {
    auto start = Clock::now();
    torch::mm_out(c, a, b);
    best = std::max(best, 2.0 * n * n * n / secondsSince(start) / 1e9);
  }
  return best;
}

//===----------------------------------------------------------------------===//
// The machine
//===----------------------------------------------------------------------===//

std::string cpuName() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0) {
      std::string name = line.substr(line.find(':') + 1);
      name.erase(0, name.find_first_not_of(" \t"));
      return name;
    }
  return "unknown CPU";
}

/// The x86 identification of the first CPU in /proc/cpuinfo ("vendor",
/// "family", "model", "stepping"): the model name alone ("AMD EPYC",
/// "Intel(R) Xeon(R) Processor" on VMs) does not tell generations apart.
nlohmann::json cpuIdentification() {
  const std::pair<const char *, const char *> fields[] = {
      {"vendor_id", "vendor"}, {"cpu family", "family"}, {"model", "model"},
      {"stepping", "stepping"}};
  nlohmann::json id = nlohmann::json::object();
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line) && !line.empty()) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos)
      continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    for (const auto &[field, name] : fields)
      if (key == field)
        id[name] = value;
  }
  return id;
}

/// The first CPU's caches from sysfs, {"L1d": "32K", "L2": "1024K", ...}
/// (empty where sysfs has none).
nlohmann::json cacheSizes() {
  nlohmann::json caches = nlohmann::json::object();
  for (int index = 0;; ++index) {
    const std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream levelFile(dir + "level"), typeFile(dir + "type"), sizeFile(dir + "size");
    std::string level, type, size;
    if (!(levelFile >> level) || !(typeFile >> type) || !(sizeFile >> size))
      break;
    const std::string suffix = type == "Data" ? "d" : type == "Instruction" ? "i" : "";
    caches["L" + level + suffix] = size;
  }
  return caches;
}

std::string loadAverage() {
  std::ifstream loadavg("/proc/loadavg");
  std::string one, five, fifteen;
  loadavg >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::string utcNow() {
  std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

//===----------------------------------------------------------------------===//
// Inputs and timing
//===----------------------------------------------------------------------===//

struct Shape {
  int64_t B, H, T, d;
};

std::string shapeText(const Shape &s) {
  std::ostringstream text;
  text << "(" << s.B << "," << s.H << "," << s.T << "," << s.d << ")";
  return text.str();
}

/// Random seq inputs [B, H, T, ...] and params [H, ...] (0.1 · randn),
/// leaves that require grad; the same for every layer of one row (seed 0).
fwp::TensorMap makeInputs(const fwp::FastWeightLayer &layer, const Shape &s) {
  torch::manual_seed(0);
  fwp::TensorMap inputs;
  for (const auto &spec : layer.signature().seq) {
    std::vector<int64_t> shape{s.B, s.H, s.T};
    for (int64_t size : fwp::resolveShape(spec, layer.dims()))
      shape.push_back(size);
    inputs[spec.name] = torch::randn(shape).requires_grad_(true);
  }
  for (const auto &spec : layer.signature().params) {
    std::vector<int64_t> shape{s.H};
    for (int64_t size : fwp::resolveShape(spec, layer.dims()))
      shape.push_back(size);
    inputs[spec.name] = (0.1 * torch::randn(shape)).requires_grad_(true);
  }
  return inputs;
}

void clearGrads(const fwp::TensorMap &inputs) {
  for (const auto &[name, input] : inputs)
    input.mutable_grad() = Tensor();
}

/// One forward + backward; its inputs' gradients are cleared first.
struct Contender {
  std::string name;
  std::function<void()> run;
  std::vector<double> seconds;
  double medianMs() {
    std::sort(seconds.begin(), seconds.end());
    return seconds[seconds.size() / 2] * 1e3;
  }
};

/// Runs every contender once as a warm-up, then `repeats` rounds of all of
/// them in turn (so that a noisy moment slows each alike), each round
/// starting one contender later: a run is slowed by what ran just before it
/// (in a fixed order the chunkwise peer, and the baseline after the current
/// kernels, ran up to 1.3x slower at (8,8,256,16); docs/benchmarks.md,
/// "Session 14"), so every contender follows every other alike.
void timeInterleaved(std::vector<Contender> &contenders, int repeats) {
  size_t n = contenders.size();
  for (int round = 0; round <= repeats; ++round)
    for (size_t i = 0; i < n; ++i) {
      Contender &c = contenders[(i + round) % n];
      auto start = Clock::now();
      c.run();
      if (round > 0)
        c.seconds.push_back(secondsSince(start));
    }
}

std::function<void()> forwardBackward(const fwp::FastWeightLayer &layer,
                                      const fwp::TensorMap &inputs) {
  return [&layer, &inputs] {
    clearGrads(inputs);
    layer.forward(inputs).at("y").sum().backward();
  };
}

//===----------------------------------------------------------------------===//
// The chunkwise delta rule in plain LibTorch (the peer of delta_net)
//===----------------------------------------------------------------------===//

/// delta_net of shared/MODELS.md, chunk by chunk. With S = W (key-major,
/// [d, d_v]), φ(k_t) = k_t and β_t already applied, one step is
///   S_t = S_{t-1} + β_t k_t u_tᵀ,  u_t = v_t − S_{t-1}ᵀ k_t,  y_t = S_tᵀ q_t.
/// In a chunk of C steps starting from S_0, write the rows Ũ_t = β_t u_tᵀ.
/// Since S_{t-1} = S_0 + Σ_{i<t} k_i Ũ_i,
///   Ũ_t = β_t (v_t − S_0ᵀ k_t)ᵀ − β_t Σ_{i<t} (k_t · k_i) Ũ_i,
/// i.e. (I + A) Ũ = diag(β)(V − K S_0) with A = strictly-lower(diag(β) K Kᵀ).
/// With the UT transform T = (I + A)⁻¹ (a unit lower-triangular solve) and
/// the WY factors W = T diag(β) K, U = T diag(β) V, which depend on the
/// chunk's inputs alone (all chunks at once):
///   Ũ = U − W S_0,   Y = Q S_0 + lower(Q Kᵀ) Ũ (diagonal included),
///   S_C = S_0 + Kᵀ Ũ.
/// Only the last three products run chunk after chunk. A last partial chunk
/// is padded with k = v = q = β = 0 after the feature maps, which leaves the
/// state unchanged; the padded outputs are dropped. Returns y [B, H, T, d_v].
Tensor chunkwiseDeltaNet(const Tensor &q, const Tensor &k, const Tensor &v,
                         const Tensor &beta, int64_t chunk) {
  auto phi = [](const Tensor &x) {
    Tensor e = torch::elu(x) + 1;
    return e / e.sum(-1, true);
  };
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), d = q.size(3), dv = v.size(3);
  const int64_t chunks = (T + chunk - 1) / chunk, padded = chunks * chunk;
  auto blocks = [&](Tensor x) { // [B, H, T, n] -> [B, H, chunks, chunk, n]
    if (padded != T)
      x = torch::constant_pad_nd(x, {0, 0, 0, padded - T});
    return x.reshape({B, H, chunks, chunk, x.size(3)});
  };
  Tensor Q = blocks(phi(q)), K = blocks(phi(k)), V = blocks(v),
         b = blocks(torch::sigmoid(beta));
  Tensor Kb = K * b;
  // I + A, unit lower-triangular: the solve reads only A's strict lower part.
  Tensor A = torch::tril(torch::matmul(Kb, K.transpose(-1, -2)), -1);
  // One solve for both factors: T [diag(β)K, diag(β)V].
  Tensor WU = torch::linalg_solve_triangular(A, torch::cat({Kb, V * b}, -1), /*upper=*/false,
                                             /*left=*/true, /*unitriangular=*/true);
  Tensor Wf = WU.narrow(-1, 0, d), Uf = WU.narrow(-1, d, dv);
  Tensor QK = torch::tril(torch::matmul(Q, K.transpose(-1, -2)));
  Tensor S = torch::zeros({B, H, d, dv}, q.options());
  std::vector<Tensor> ys;
  for (int64_t n = 0; n < chunks; ++n) {
    Tensor Qn = Q.select(2, n), Kn = K.select(2, n);
    Tensor Un = Uf.select(2, n) - torch::matmul(Wf.select(2, n), S);
    ys.push_back(torch::matmul(Qn, S) + torch::matmul(QK.select(2, n), Un));
    S = S + torch::matmul(Kn.transpose(-1, -2), Un);
  }
  return torch::stack(ys, 2).reshape({B, H, padded, dv}).narrow(2, 0, T);
}

Tensor chunkwiseOf(const fwp::TensorMap &in, int64_t chunk) {
  return chunkwiseDeltaNet(in.at("q"), in.at("k"), in.at("v"), in.at("beta"), chunk);
}

double maxAbsDiff(const Tensor &a, const Tensor &b) {
  return (a - b).abs().max().item<double>();
}

/// The chunkwise form against the compiled delta_net at T = 100 (not a
/// multiple of the chunk): max |difference| of y and of every input's
/// gradient under a random output gradient.
nlohmann::json checkChunkwise(const fwp::CompiledLayer &compiled, int64_t d, int64_t chunk) {
  Shape s{2, 2, 100, d};
  fwp::TensorMap inputs = makeInputs(compiled, s);
  Tensor gradY = torch::randn({s.B, s.H, s.T, d});
  Tensor yCompiled = compiled.forward(inputs).at("y");
  std::vector<Tensor> leaves;
  for (const auto &[name, value] : inputs)
    leaves.push_back(value);
  auto gradsCompiled = torch::autograd::grad({yCompiled}, leaves, {gradY});
  Tensor yChunk = chunkwiseOf(inputs, chunk);
  auto gradsChunk = torch::autograd::grad({yChunk}, leaves, {gradY});
  double gradDiff = 0;
  for (size_t i = 0; i < leaves.size(); ++i)
    gradDiff = std::max(gradDiff, maxAbsDiff(gradsCompiled[i], gradsChunk[i]));
  return {{"T", s.T},
          {"max_abs_diff_y", maxAbsDiff(yCompiled, yChunk)},
          {"max_abs_diff_grads", gradDiff}};
}

//===----------------------------------------------------------------------===//
// One row
//===----------------------------------------------------------------------===//

struct Options {
  std::string artifacts, baseline, baselineJson;
  int repeats = 3, eagerRepeats = 1;
  bool skipEager = false;
  int64_t chunk = 64;
};

std::string artifactPath(const std::string &dir, const std::string &model, int64_t d) {
  return dir + "/" + model + "_d" + std::to_string(d) + ".fwpk";
}

/// Loads `path` and checks it is `model` at d (and d_ff = 4d for delta_mlp).
std::unique_ptr<fwp::CompiledLayer> loadLayer(const std::string &path, const std::string &model,
                                              int64_t d) {
  auto layer = std::make_unique<fwp::CompiledLayer>(fwp::Artifact::load(path));
  const fwp::Dims &dims = layer->dims();
  if (layer->signature().layer != model || dims.at("d") != d ||
      (model == "delta_mlp" && dims.at("d_ff") != 4 * d))
    throw fwp::Error(path + ": expected layer '" + model + "' at d = " + std::to_string(d) +
                     (model == "delta_mlp" ? " and d_ff = 4d" : "") + ", found '" +
                     layer->signature().layer + "' at d = " + std::to_string(dims.at("d")));
  return layer;
}

/// The eager reference's median over `repeats` runs, after a warm-up on the
/// first 16 steps only (a full warm-up doubles the cost of the slowest part
/// of the benchmark and warms nothing the short one does not).
double eagerMs(const fwp::FastWeightLayer &reference, const fwp::TensorMap &inputs,
               int64_t T, int repeats) {
  fwp::TensorMap warmUp = inputs;
  for (const auto &spec : reference.signature().seq)
    warmUp[spec.name] = inputs.at(spec.name).narrow(2, 0, std::min<int64_t>(T, 16));
  Contender eager{"eager", {}, {}};
  forwardBackward(reference, warmUp)();
  eager.run = forwardBackward(reference, inputs);
  for (int i = 0; i < repeats; ++i) {
    auto start = Clock::now();
    eager.run();
    eager.seconds.push_back(secondsSince(start));
  }
  return eager.medianMs();
}

/// "<prefix>_ms" and "<prefix>_gflops"; "<prefix>_pct_peak" is added by
/// addPercentOfPeak once the run's peak is known.
nlohmann::json gflopsFields(const std::string &prefix, double ms, double flops) {
  return {{prefix + "_ms", ms}, {prefix + "_gflops", flops / (ms * 1e-3) / 1e9}};
}

void addPercentOfPeak(nlohmann::json &row, double peak) {
  for (const char *prefix : {"current", "baseline", "chunkwise"}) {
    auto gflops = row.find(std::string(prefix) + "_gflops");
    if (gflops != row.end() && gflops->is_number())
      row[std::string(prefix) + "_pct_peak"] = 100.0 * gflops->get<double>() / peak;
  }
}

nlohmann::json measureRow(const std::string &model, const Shape &s, const Options &options,
                          const nlohmann::json &recordedBaseline) {
  auto current = loadLayer(artifactPath(options.artifacts, model, s.d), model, s.d);
  std::unique_ptr<fwp::CompiledLayer> baseline;
  if (!options.baseline.empty())
    baseline = loadLayer(artifactPath(options.baseline, model, s.d), model, s.d);
  fwp::TensorMap inputs = makeInputs(*current, s);
  const double flops = flopsOf(model, current->dims(), s.B, s.H, s.T);

  std::vector<Contender> contenders;
  contenders.push_back({"current", forwardBackward(*current, inputs), {}});
  if (baseline)
    contenders.push_back({"baseline", forwardBackward(*baseline, inputs), {}});
  const bool chunkwise = model == "delta_net";
  if (chunkwise)
    contenders.push_back({"chunkwise",
                          [&inputs, &options] {
                            clearGrads(inputs);
                            chunkwiseOf(inputs, options.chunk).sum().backward();
                          },
                          {}});
  timeInterleaved(contenders, options.repeats);

  nlohmann::json row = {{"model", model}, {"B", s.B},          {"H", s.H},
                        {"T", s.T},       {"d", s.d},          {"dims", current->dims()},
                        {"flops", flops}, {"repeats", options.repeats},
                        // The CPU image the loader chose (e.g. "cpu.znver4").
                        {"cpu_image", current->artifact().cpuSection()}};
  const double currentMs = contenders[0].medianMs();
  row.update(gflopsFields("current", currentMs, flops));

  std::optional<double> baselineMs;
  if (baseline) {
    baselineMs = contenders[1].medianMs();
    row["baseline_source"] = "measured";
  } else if (!recordedBaseline.is_null()) {
    for (const auto &recorded : recordedBaseline.at("rows"))
      if (recorded.at("model") == model && recorded.at("B") == s.B && recorded.at("H") == s.H &&
          recorded.at("T") == s.T && recorded.at("d") == s.d &&
          recorded.at("baseline_ms").is_number())
        baselineMs = recorded.at("baseline_ms").get<double>();
    row["baseline_source"] = "recorded";
  }
  if (baselineMs) {
    row.update(gflopsFields("baseline", *baselineMs, flops));
    row["speedup_vs_today"] = *baselineMs / currentMs;
  } else {
    row["baseline_ms"] = nullptr;
    row["speedup_vs_today"] = nullptr;
  }

  if (chunkwise) {
    const double chunkMs = contenders.back().medianMs();
    row["chunk"] = options.chunk;
    row.update(gflopsFields("chunkwise", chunkMs, flops));
    row["speedup_vs_chunkwise"] = chunkMs / currentMs;
    if (baselineMs)
      row["baseline_speedup_vs_chunkwise"] = chunkMs / *baselineMs;
    torch::NoGradGuard noGrad;
    row["chunkwise_max_abs_diff_y"] =
        maxAbsDiff(current->forward(inputs).at("y"), chunkwiseOf(inputs, options.chunk));
  }

  if (options.skipEager) {
    row["eager_ms"] = nullptr;
    row["speedup_vs_eager"] = nullptr;
  } else {
    auto reference = fwp::makeReferenceLayer(model, current->dims());
    const double ms = eagerMs(*reference, inputs, s.T, options.eagerRepeats);
    row["eager_ms"] = ms;
    row["eager_repeats"] = options.eagerRepeats;
    row["speedup_vs_eager"] = ms / currentMs;
    if (baselineMs)
      row["baseline_speedup_vs_eager"] = ms / *baselineMs;
  }
  return row;
}

bool parseShape(const std::string &text, Shape &shape) {
  char c1, c2, c3;
  std::istringstream in(text);
  return bool(in >> shape.B >> c1 >> shape.H >> c2 >> shape.T >> c3 >> shape.d) && c1 == ',' &&
         c2 == ',' && c3 == ',' && in.peek() == EOF && shape.B > 0 && shape.H > 0 &&
         shape.T > 0 && shape.d > 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"CPU kernels (forward + backward, one thread) vs today's kernels, the eager "
               "reference, a chunkwise LibTorch delta rule and the core's FMA peak"};
  Options options;
  std::string out;
  std::vector<std::string> models = {"linear_transformer", "delta_net", "delta_mlp",
                                     "delta_rnn",          "delta_lstm", "rdn",
                                     "gated_delta_net",    "retnet",     "gla",
                                     "delta_product"};
  std::vector<std::string> shapeTexts = {"8,8,256,16", "4,8,512,32", "2,8,1024,64",
                                         "1,8,2048,128"};
  app.add_option("--artifacts", options.artifacts,
                 "folder with the current <model>_d<d>.fwpk (delta_mlp with d_ff = 4d)")
      ->required();
  auto *baselineDir =
      app.add_option("--baseline", options.baseline,
                     "folder with today's kernels, same naming (timed interleaved)");
  app.add_option("--baseline-json", options.baselineJson,
                 "instead of --baseline: today's times recorded by an earlier run "
                 "(its rows' baseline_ms), e.g. bench/cpu_kernels_baseline_1thread.json")
      ->excludes(baselineDir);
  app.add_option("--models", models, "models to run");
  app.add_option("--shapes", shapeTexts, "shapes B,H,T,d to run");
  app.add_option("--repeats", options.repeats, "timed runs of the compiled kernels (median)")
      ->check(CLI::PositiveNumber);
  app.add_option("--eager-repeats", options.eagerRepeats, "timed runs of the eager reference")
      ->check(CLI::PositiveNumber);
  app.add_flag("--skip-eager", options.skipEager, "do not time the eager reference");
  app.add_option("--chunk", options.chunk, "chunk size of the chunkwise LibTorch delta rule")
      ->check(CLI::PositiveNumber);
  app.add_option("--out", out, "also write the JSON here");
  CLI11_PARSE(app, argc, argv);

  std::vector<Shape> shapes;
  for (const std::string &text : shapeTexts) {
    Shape shape{};
    if (!parseShape(text, shape)) {
      std::cerr << "error: --shapes: '" << text << "' is not B,H,T,d (positive integers)\n";
      return 2;
    }
    shapes.push_back(shape);
  }

  at::set_num_threads(1);
  const auto started = Clock::now();
  try {
    nlohmann::json recordedBaseline;
    if (!options.baselineJson.empty()) {
      std::ifstream file(options.baselineJson);
      if (!file)
        throw fwp::Error("--baseline-json: cannot read '" + options.baselineJson + "'");
      try {
        recordedBaseline = nlohmann::json::parse(file);
        if (!recordedBaseline.at("rows").is_array())
          throw fwp::Error("'rows' is not an array");
      } catch (const std::exception &error) {
        throw fwp::Error("--baseline-json '" + options.baselineJson +
                         "': not a fwp-bench-kernels output (" + error.what() + ")");
      }
    }

    nlohmann::json result;
    result["machine"] = {{"cpu", cpuName()},
                         {"cpu_id", cpuIdentification()},
                         {"caches", cacheSizes()},
                         {"logical_cpus", std::thread::hardware_concurrency()},
                         {"threads", at::get_num_threads()},
                         {"torch", TORCH_VERSION},
                         {"load_average_at_start", loadAverage()},
                         {"date_utc", utcNow()}};
    // The peak, measured before and after the kernels: a busy moment can
    // only lower a measurement, so the higher of the two counts.
    auto measurePeak = [] {
      std::cerr << "measuring the core's peak (FMA micro-benchmark, SGEMM 1024^3)..."
                << std::endl;
      nlohmann::json peak = {{"fma", measureFmaPeak()}, {"sgemm_1024_gflops", measureSgemmGflops()}};
      std::cerr << peak.dump() << std::endl;
      return peak;
    };
    nlohmann::json peakBefore = measurePeak();
    result["flop_convention"] =
        "flops per step and (b, h) = 2 * (1 forward + 3 backward) * the forward's "
        "fast-weight multiply-adds: read m*n, write_sum m*n, write_delta 2*m*n, "
        "scale_weight/scale_rows 0 (fused into the write); vector work not counted";
    result["chunkwise"] = {{"chunk", options.chunk}, {"checks", nlohmann::json::array()}};
    if (!options.baselineJson.empty())
      result["baseline_json"] = options.baselineJson;

    // The chunkwise form against the compiled delta_net at T = 100, per d.
    if (std::find(models.begin(), models.end(), "delta_net") != models.end())
      for (const Shape &s : shapes) {
        auto compiled =
            loadLayer(artifactPath(options.artifacts, "delta_net", s.d), "delta_net", s.d);
        nlohmann::json check = checkChunkwise(*compiled, s.d, options.chunk);
        check["d"] = s.d;
        std::cerr << "chunkwise check " << check.dump() << std::endl;
        result["chunkwise"]["checks"].push_back(check);
      }

    result["rows"] = nlohmann::json::array();
    for (const std::string &model : models)
      for (const Shape &shape : shapes) {
        std::cerr << "[" << int(secondsSince(started)) << " s] " << model << " "
                  << shapeText(shape) << "..." << std::endl;
        nlohmann::json row = measureRow(model, shape, options, recordedBaseline);
        std::cerr << row.dump() << std::endl;
        result["rows"].push_back(row);
      }
    nlohmann::json peakAfter = measurePeak();
    auto gflopsOf = [](const nlohmann::json &peak) {
      const nlohmann::json &fma = peak.at("fma").at("gflops");
      return std::pair(fma.is_number() ? fma.get<double>() : 0.0,
                       peak.at("sgemm_1024_gflops").get<double>());
    };
    auto [fmaBefore, sgemmBefore] = gflopsOf(peakBefore);
    auto [fmaAfter, sgemmAfter] = gflopsOf(peakAfter);
    const double fmaGflops = std::max(fmaBefore, fmaAfter);
    const double sgemmGflops = std::max(sgemmBefore, sgemmAfter);
    const double peak = std::max(fmaGflops, sgemmGflops);
    result["peak"] = {{"fma", peakBefore.at("fma")},
                      {"fma_gflops", fmaGflops},
                      {"sgemm_1024_gflops", sgemmGflops},
                      {"peak_gflops", peak},
                      {"peak_source", fmaGflops >= sgemmGflops ? "fma" : "sgemm"},
                      {"before", peakBefore},
                      {"after", peakAfter}};
    for (nlohmann::json &row : result["rows"])
      addPercentOfPeak(row, peak);
    result["total_seconds"] = secondsSince(started);
    std::cout << result.dump(2) << std::endl;
    if (!out.empty()) {
      std::ofstream file(out);
      file << result.dump(2) << "\n";
      if (!file)
        throw fwp::Error("--out: cannot write '" + out + "'");
    }
  } catch (const fwp::Error &error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
