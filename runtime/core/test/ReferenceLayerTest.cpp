//===- ReferenceLayerTest.cpp - Reference layers vs hand-worked numbers ---===//
//
// Part 1: tiny cases (B = H = 1, d = 2, T = 1 and 2) worked out by hand in
// the comments. Part 2: invariants against independent formulations.
// Part 3: input validation.
//
//===----------------------------------------------------------------------===//
#include "TestSupport.h"

#include <cmath>

namespace fwp::test {
namespace {

// The tensors here are tiny: intra-op threads only add OpenMP spinning, which
// on a loaded machine slows the suite down by orders of magnitude.
class SingleThreaded : public ::testing::Environment {
public:
  void SetUp() override { torch::set_num_threads(1); }
};
// gtest takes ownership of the environment.
::testing::Environment *const kSingleThreaded =
    ::testing::AddGlobalTestEnvironment(new SingleThreaded);

const double kLn2 = std::log(2.0);
const double kLn3 = std::log(3.0);

double logistic(double x) { return 1.0 / (1.0 + std::exp(-x)); }

using Rows = std::vector<std::vector<double>>;

/// One hand-worked case: per-step seq values (unlisted seq inputs are zero),
/// per-head params (unlisted are zero), and the expected y per step and the
/// expected states (row-major) after step 1 and after step 2.
struct HandCase {
  HandCase(std::string layerName, Dims layerDims)
      : layer(std::move(layerName)), dims(std::move(layerDims)) {}
  std::string layer;
  Dims dims;
  std::map<std::string, Rows> seq;
  std::map<std::string, std::vector<double>> params;
  Rows y;
  std::map<std::string, std::vector<double>> statesAfter[2];
};

torch::Tensor fromValues(const std::vector<double> &values, std::vector<int64_t> shape,
                         torch::ScalarType dtype) {
  return torch::tensor(values, torch::kDouble).reshape(shape).to(dtype);
}

void checkHandCase(const HandCase &c, torch::ScalarType dtype, double tolerance) {
  const auto layer = makeReferenceLayer(c.layer, c.dims);
  const LayerSignature &sig = layer->signature();
  for (int64_t steps : {1, 2}) {
    SCOPED_TRACE(c.layer + " T=" + std::to_string(steps));
    TensorMap inputs;
    for (const auto &spec : sig.seq) {
      const auto shape = withLeading({1, 1, steps}, spec, layer->dims());
      auto given = c.seq.find(spec.name);
      if (given == c.seq.end()) {
        inputs[spec.name] = torch::zeros(shape, dtype);
        continue;
      }
      std::vector<double> flat;
      for (int64_t t = 0; t < steps; ++t)
        flat.insert(flat.end(), given->second[t].begin(), given->second[t].end());
      inputs[spec.name] = fromValues(flat, shape, dtype);
    }
    for (const auto &spec : sig.params) {
      const auto shape = withLeading({1}, spec, layer->dims());
      auto given = c.params.find(spec.name);
      inputs[spec.name] = given == c.params.end() ? torch::zeros(shape, dtype)
                                                  : fromValues(given->second, shape, dtype);
    }
    const TensorMap out = layer->forward(inputs);

    std::vector<double> yFlat;
    for (int64_t t = 0; t < steps; ++t)
      yFlat.insert(yFlat.end(), c.y[t].begin(), c.y[t].end());
    EXPECT_TRUE(tensorsNear(out.at("y"), fromValues(yFlat, {1, 1, steps, 2}, dtype), tolerance))
        << "y";
    const auto &expectedStates = c.statesAfter[steps - 1];
    for (const auto &spec : sig.states) {
      ASSERT_TRUE(expectedStates.count(spec.name)) << "the case lacks state " << spec.name;
      const torch::Tensor &actual = out.at(finalName(spec.name));
      EXPECT_TRUE(tensorsNear(actual, fromValues(expectedStates.at(spec.name),
                                                 actual.sizes().vec(), dtype),
                              tolerance))
          << finalName(spec.name);
    }
  }
}

void checkBothDtypes(const HandCase &c) {
  checkHandCase(c, torch::kDouble, 1e-12);
  checkHandCase(c, torch::kFloat, 2e-6);
}

// --- Part 1: hand-worked cases ---------------------------------------------
// Facts used throughout: elu1(x) = x + 1 for x >= 0 and e^x for x < 0, so
// elu1(-ln 2) = 1/2; σ(0) = 1/2; σ(ln 3) = 3/4; softmax([a, b]) =
// [σ(a − b), σ(b − a)], so softmax([ln 3, 0]) = [3/4, 1/4].
// read(W, q) = q0 · row0(W) + q1 · row1(W).

TEST(Hand, LinearTransformer) {
  HandCase c{"linear_transformer", {{"d", 2}}};
  // t=1: q=[0,1], k=[1,0], v=[2,4].
  //   φ(k) = [2,1]; φ(q) = [1,2]; W1 = φ(k) ⊗ v = [[4,8],[2,4]]; z1 = [2,1].
  //   read(W1, φ(q)) = 1·[4,8] + 2·[2,4] = [8,16]; z1·φ(q) = 2 + 2 = 4;
  //   y1 = [8,16] / 4.00001.
  // t=2: q=[1,1], k=[0,−ln 2], v=[−1,3].
  //   φ(k) = [1, 1/2]; φ(q) = [2,2]; W2 = W1 + [[−1,3],[−0.5,1.5]] = [[3,11],[1.5,5.5]];
  //   z2 = [3,1.5]; read(W2, φ(q)) = 2·[3,11] + 2·[1.5,5.5] = [9,33];
  //   z2·φ(q) = 6 + 3 = 9; y2 = [9,33] / 9.00001.
  c.seq = {{"q", {{0, 1}, {1, 1}}}, {"k", {{1, 0}, {0, -kLn2}}}, {"v", {{2, 4}, {-1, 3}}}};
  c.y = {{8 / 4.00001, 16 / 4.00001}, {9 / 9.00001, 33 / 9.00001}};
  c.statesAfter[0] = {{"W", {4, 8, 2, 4}}, {"z", {2, 1}}};
  c.statesAfter[1] = {{"W", {3, 11, 1.5, 5.5}}, {"z", {3, 1.5}}};
  checkBothDtypes(c);
}

TEST(Hand, DeltaNet) {
  HandCase c{"delta_net", {{"d", 2}}};
  // t=1: k=[2,0] → elu1 [3,1] → φ(k) = [3/4,1/4]; β = σ(0) = 1/2; v = [4,8]; v̄ = 0.
  //   W1 = [3/4,1/4] ⊗ ½[4,8] = [[1.5,3],[0.5,1]].
  //   q=[0,0] → φ(q) = [½,½]; y1 = ½[1.5,3] + ½[0.5,1] = [1,2].
  // t=2: k=[0,2] → φ(k) = [1/4,3/4]; v̄ = ¼[1.5,3] + ¾[0.5,1] = [0.75,1.5];
  //   v = [2.75,−0.5]; β = σ(ln 3) = 3/4; β(v − v̄) = ¾[2,−2] = [1.5,−1.5];
  //   W2 = W1 + [1/4,3/4] ⊗ [1.5,−1.5] = [[1.875,2.625],[1.625,−0.125]].
  //   q=[2,0] → φ(q) = [3/4,1/4]; y2 = ¾[1.875,2.625] + ¼[1.625,−0.125] = [1.8125,1.9375].
  c.seq = {{"q", {{0, 0}, {2, 0}}},
           {"k", {{2, 0}, {0, 2}}},
           {"v", {{4, 8}, {2.75, -0.5}}},
           {"beta", {{0}, {kLn3}}}};
  c.y = {{1, 2}, {1.8125, 1.9375}};
  c.statesAfter[0] = {{"W", {1.5, 3, 0.5, 1}}};
  c.statesAfter[1] = {{"W", {1.875, 2.625, 1.625, -0.125}}};
  checkBothDtypes(c);
}

TEST(Hand, DeltaMlp) {
  // d = 2, d_ff = 3 (so W1 is 2×3 and W2 is 3×2: a transposition cannot pass).
  // ε = 1e-5; c = 1/√(1 + ε) (LayerNorm of a centred [±1, ∓1] has variance 1).
  // ln_weight = [1, 0.5], ln_bias = [0, 1].
  const double eps = 1e-5;
  HandCase h{"delta_mlp", {{"d", 2}, {"d_ff", 3}}};
  h.params = {{"ln_weight", {1, 0.5}}, {"ln_bias", {0, 1}}};
  // t=1: q=[3,1]: mean 2, centred [1,−1], LN = [c, −0.5c + 1];
  //   a = [1+c, 2−0.5c] / (3 + 0.5c + ε) = [0.571425918380685, 0.428571224482580].
  //   k1=[1,0] → elu1 [2,1] → κ1 = [2,1]/(3+ε); v1=[1,2,3]; β1 = ½; W1 starts at 0:
  //   W1 = κ1 ⊗ ½v1 = [[1,2,3],[0.5,1,1.5]] / (3+ε).
  //   g = a0·row0 + a1·row1 = (a0 + 0.5 a1)/(3+ε) · [1,2,3]
  //     = [0.261902970530757, 0.523805941061513, 0.785708911592270].
  //   k2=[0,0,0] → κ2 = [1,1,1]/(3+ε); v2=[3,−3]; β2 = ½: W2 rows all [1.5,−1.5]/(3+ε).
  //   f = sumnorm_eps(1 + g) = [0.276041319985600, 0.333332604166547, 0.390623888347495];
  //   read(W2, f) = (Σf)/(3+ε)·[1.5,−1.5]; y1 = that + q = [3.49999723959236, 0.50000276040764].
  // t=2: q=[0,2]: centred [−1,1], LN = [−c, 1 + 0.5c]; elu1 = [e^−c, 2 + 0.5c];
  //   a = that / (e^−c + 2 + 0.5c + ε) = [0.128275992796792, 0.871720520317639].
  //   k1=[0,1] → κ1 = [1,2]/(3+ε); v̄1 = (1·row0 + 2·row1)/(3+ε) = 2[1,2,3]/(3+ε)²;
  //   v1=[0,0,3], β1 = σ(ln 3) = ¾: W1 += κ1 ⊗ ¾(v1 − v̄1), giving
  //   W1 = [[0.277777222222222, 0.555554444444444, 1.583329166675],
  //         [0.055556111105556, 0.111112222211111, 1.666663333333333]].
  //   g = a0·row0 + a1·row1 = [0.084061551036650, 0.168123102073301, 1.655967748907018].
  //   k2=[1,0,−ln 2] → elu1 [2,1,½] → κ2 = [2,1,0.5]/(3.5+ε);
  //   v̄2 = (Σκ2)·[1.5,−1.5]/(3+ε) = ±0.499996904776304; v2=[1,1], β2 = ½:
  //   W2 += κ2 ⊗ ½(v2 − v̄2), giving rows [0.642855952381033, −0.071429013600858],
  //   [0.571427142859961, −0.285713673469874], [0.535712738099425, −0.392856003404381].
  //   f = sumnorm_eps(1 + g) = [0.220869128248724, 0.237996016919340, 0.541132817409540];
  //   y2 = read(W2, f) + q = [0.567876161042093, 1.703637543810625].
  h.seq = {{"q", {{3, 1}, {0, 2}}},
           {"k1", {{1, 0}, {0, 1}}},
           {"v1", {{1, 2, 3}, {0, 0, 3}}},
           {"beta1", {{0}, {kLn3}}},
           {"k2", {{0, 0, 0}, {1, 0, -kLn2}}},
           {"v2", {{3, -3}, {1, 1}}},
           {"beta2", {{0}, {0}}}};
  h.y = {{3.4999972395923558, 0.5000027604076444}, {0.5678761610420926, 1.7036375438106246}};
  const double r = 1 / (3 + eps);
  h.statesAfter[0] = {{"W1", {r, 2 * r, 3 * r, 0.5 * r, r, 1.5 * r}},
                      {"W2", {1.5 * r, -1.5 * r, 1.5 * r, -1.5 * r, 1.5 * r, -1.5 * r}}};
  h.statesAfter[1] = {
      {"W1",
       {0.27777722222222223, 0.5555544444444445, 1.583329166675, 0.05555611110555558,
        0.11111222221111117, 1.6666633333333334}},
      {"W2",
       {0.6428559523810334, -0.07142901360085846, 0.5714271428599611, -0.28571367346987364,
        0.535712738099425, -0.39285600340438126}}};
  checkBothDtypes(h);
}

TEST(Hand, DeltaRnn) {
  HandCase c{"delta_rnn", {{"d", 2}}};
  // q, k, v, beta as in Hand.DeltaNet, so z1 = [1,2], z2 = [1.8125,1.9375] and
  // W is delta_net's W.
  // t=1: k_r=[0,0] → softmax ½,½; v_r=[2,0]; β_r = ½: R1 = [½,½] ⊗ [1,0] = [[0.5,0],[0.5,0]].
  //   y0 = 0 → softmax(y0) = [½,½]; read(R1, ·) = [0.5,0]; y1 = z1 + [0.5,0] = [1.5,2].
  // t=2: k_r=[ln 3,0] → [¾,¼]; v̄ = read(R1, [¾,¼]) = [0.5,0]; v_r=[1,1]; β_r = ½:
  //   ½(v_r − v̄) = [0.25,0.5]; R2 = R1 + [¾,¼] ⊗ [0.25,0.5] = [[0.6875,0.375],[0.5625,0.125]].
  //   p = softmax(y1) = softmax([1.5,2]) = [σ(−½), σ(½)] = [0.377540668798145, 0.622459331201855];
  //   y2 = z2 + p0·[0.6875,0.375] + p1·[0.5625,0.125] = [2.42219258359977, 2.15688516719954].
  const double p0 = logistic(-0.5), p1 = logistic(0.5);
  c.seq = {{"q", {{0, 0}, {2, 0}}},       {"k", {{2, 0}, {0, 2}}},
           {"v", {{4, 8}, {2.75, -0.5}}}, {"beta", {{0}, {kLn3}}},
           {"k_r", {{0, 0}, {kLn3, 0}}},  {"v_r", {{2, 0}, {1, 1}}},
           {"beta_r", {{0}, {0}}}};
  const std::vector<double> y2{1.8125 + p0 * 0.6875 + p1 * 0.5625, 1.9375 + p0 * 0.375 + p1 * 0.125};
  c.y = {{1.5, 2}, y2};
  c.statesAfter[0] = {{"W", {1.5, 3, 0.5, 1}}, {"R", {0.5, 0, 0.5, 0}}, {"y", {1.5, 2}}};
  c.statesAfter[1] = {
      {"W", {1.875, 2.625, 1.625, -0.125}}, {"R", {0.6875, 0.375, 0.5625, 0.125}}, {"y", y2}};
  EXPECT_NEAR(y2[0], 2.422192583599768, 1e-12); // the decimals of the comment
  EXPECT_NEAR(y2[1], 2.1568851671995364, 1e-12);
  checkBothDtypes(c);
}

TEST(Hand, DeltaLstm) {
  HandCase c{"delta_lstm", {{"d", 2}}};
  // Step 1 (s = softmax(h0 = 0) = [½,½]):
  //   gate i: W_i stays 0 (v_i = 0) so z_i = 0; k_ri = 0 → [½,½], v_ri = [4 ln 3, 0], β = ½:
  //     R_i = [½,½] ⊗ [2 ln 3, 0] = rows [ln 3, 0]; read(R_i, s) = [ln 3, 0];
  //     i = σ([ln 3, 0]) = [¾, ½].
  //   gate u: k_u = [2,0] → φ = [¾,¼]; v_u = [2,4], β = ½: W_u = [¾,¼] ⊗ [1,2] = [[.75,1.5],[.25,.5]];
  //     q_u = [2,0] → φ = [¾,¼]: z_u = ¾[.75,1.5] + ¼[.25,.5] = [.625,1.25];
  //     k_ru = [ln 3,0] → [¾,¼], v_ru = [1,−1], β = ½: R_u = [¾,¼] ⊗ [½,−½] = [[.375,−.375],[.125,−.125]];
  //     read(R_u, s) = [.25,−.25]; u = [.875, 1].
  //   gate o: k_o = 0 → φ = [½,½], v_o = [4 ln 3, 0], β = ½: W_o rows [ln 3, 0]; z_o = [ln 3, 0];
  //     R_o stays 0; o = σ([ln 3, 0]) = [¾, ½].
  //   c1 = i⊙u + (1−i)⊙0 = [.65625, .5]; h1 = o⊙c1 = [.4921875, .25] = y1.
  // Step 2: all inputs 0 except v_i = [2,−2] (so that i ≠ o below). Every key
  //   is then [½,½] and every β = ½, so each matrix M becomes
  //   M + [½,½] ⊗ ½(v − read(M, [½,½])):
  //   W_i = [½,½] ⊗ [1,−1], rows [.5,−.5]; z_i = [.5,−.5];
  //   W_u: read = [.5,1] → W_u = [[.625,1.25],[.125,.25]]; z_u = read(W_u, [½,½]) = [.375,.75];
  //   W_o rows ¾[ln 3, 0]; z_o = [¾ ln 3, 0]; R_i rows ¾[ln 3, 0];
  //   R_u: read = [.25,−.25] → R_u = [[.3125,−.3125],[.0625,−.0625]]; R_o = 0.
  //   s = softmax(h1) = [σ(.2421875), σ(−.2421875)] = [0.560252653633263, 0.439747346366737].
  //   i = σ([¾ ln 3 + .5, −.5]) = [0.789839662797958, 0.377540668798145]
  //     (the rows of R_i are equal and Σs = 1);
  //   u = [.375,.75] + (.3125 s0 + .0625 s1)[1,−1] = [0.577563163408316, 0.547436836591684];
  //   o = σ([¾ ln 3, 0]) = [0.695076124968439, ½];
  //   c2 = i⊙u + (1−i)⊙c1 = [0.594100015519786, 0.517909335012493];
  //   h2 = o⊙c2 = [0.412944736631183, 0.258954667506246] = y2.
  const double s0 = logistic(0.2421875), s1 = 1 - s0;
  const std::vector<double> i2{logistic(0.75 * kLn3 + 0.5), logistic(-0.5)};
  const std::vector<double> o2{logistic(0.75 * kLn3), 0.5};
  const double shift = 0.3125 * s0 + 0.0625 * s1;
  const std::vector<double> u2{0.375 + shift, 0.75 - shift};
  const std::vector<double> c2{i2[0] * u2[0] + (1 - i2[0]) * 0.65625,
                               i2[1] * u2[1] + (1 - i2[1]) * 0.5};
  const std::vector<double> h2{o2[0] * c2[0], o2[1] * c2[1]};
  EXPECT_NEAR(h2[0], 0.4129447366311825, 1e-12); // the decimals of the comment
  EXPECT_NEAR(h2[1], 0.2589546675062464, 1e-12);

  c.seq = {{"v_i", {{0, 0}, {2, -2}}},        {"v_ri", {{4 * kLn3, 0}, {0, 0}}},
           {"q_u", {{2, 0}, {0, 0}}},         {"k_u", {{2, 0}, {0, 0}}},
           {"v_u", {{2, 4}, {0, 0}}},         {"k_ru", {{kLn3, 0}, {0, 0}}},
           {"v_ru", {{1, -1}, {0, 0}}},       {"v_o", {{4 * kLn3, 0}, {0, 0}}}};
  c.y = {{0.4921875, 0.25}, h2};
  c.statesAfter[0] = {{"W_i", {0, 0, 0, 0}},
                      {"W_u", {.75, 1.5, .25, .5}},
                      {"W_o", {kLn3, 0, kLn3, 0}},
                      {"R_i", {kLn3, 0, kLn3, 0}},
                      {"R_u", {.375, -.375, .125, -.125}},
                      {"R_o", {0, 0, 0, 0}},
                      {"h", {0.4921875, 0.25}},
                      {"c", {0.65625, 0.5}}};
  const double l = 0.75 * kLn3;
  c.statesAfter[1] = {{"W_i", {.5, -.5, .5, -.5}},
                      {"W_u", {.625, 1.25, .125, .25}},
                      {"W_o", {l, 0, l, 0}},
                      {"R_i", {l, 0, l, 0}},
                      {"R_u", {.3125, -.3125, .0625, -.0625}},
                      {"R_o", {0, 0, 0, 0}},
                      {"h", h2},
                      {"c", c2}};
  checkBothDtypes(c);
}

TEST(Hand, Rdn) {
  HandCase c{"rdn", {{"d", 2}}};
  // Non-symmetric R's so that (s R)[j] = Σ_i s[i] R[i,j] cannot pass transposed,
  // and y1 = [a, 0] rather than [a, −a]: for d = 2, softmax only sees the
  // difference of its two entries, which s R and R s share when s = [a, −a].
  // R_q = [[0,0],[1,0]], R_k = [[0,1],[0,0]], R_v = [[1,2],[0,0]], r_b = [½, 0].
  // t=1: y0 = 0 → s = 0, so the params do not act.
  //   k=[ln 3,0] → k̃ = [¾,¼]; v=[2,0]; β̃ = σ(0) = ½: W1 = [¾,¼] ⊗ [1,0] = [[.75,0],[.25,0]].
  //   q=[0,ln 3] → q̃ = [¼,¾]; y1 = ¼[.75,0] + ¾[.25,0] = [.375,0].
  // t=2: s = tanh(y1) = [τ, 0], τ = tanh(.375) = 0.358357398350786; so s R = τ·row0(R):
  //   s R_q = [0, 0]; s R_k = [0, τ]; s R_v = [τ, 2τ]; s·r_b = τ/2.
  //   q=[ln 3,0] → q̃ = softmax([ln 3, 0]) = [¾,¼];
  //   k=[0,0] → k̃ = softmax([0,τ]) = [σ(−τ), σ(τ)] = [0.411357251556325, 0.588642748443675];
  //   v=[1,0] → ṽ = [1+τ, 2τ]; beta=0 → β̃ = σ(τ/2) = 0.544675213865771.
  //   v̄ = read(W1, k̃) = [.75 k̃0 + .25 k̃1, 0] = [0.455678625778163, 0];
  //   W2 = W1 + k̃ ⊗ β̃(ṽ − v̄) = [[0.952250684402650, 0.160584321420649],
  //                               [0.539416069100435, 0.229792463753542]];
  //   y2 = read(W2, q̃) = ¾ row0 + ¼ row1 = [0.849042030577097, 0.177886357003872].
  c.params = {{"R_q", {0, 0, 1, 0}}, {"R_k", {0, 1, 0, 0}}, {"R_v", {1, 2, 0, 0}}, {"r_b", {0.5, 0}}};
  c.seq = {{"q", {{0, kLn3}, {kLn3, 0}}},
           {"k", {{kLn3, 0}, {0, 0}}},
           {"v", {{2, 0}, {1, 0}}},
           {"beta", {{0}, {0}}}};
  const std::vector<double> y2{0.8490420305770965, 0.17788635700387245};
  c.y = {{0.375, 0}, y2};
  c.statesAfter[0] = {{"W", {.75, 0, .25, 0}}, {"y", {.375, 0}}};
  c.statesAfter[1] = {
      {"W", {0.9522506844026504, 0.16058432142064927, 0.539416069100435, 0.22979246375354204}},
      {"y", y2}};
  checkBothDtypes(c);
}

// The layers beyond the paper. l2n(x) = x / √(Σx² + ε), ε = 1e-6, so the
// cases below name √(n + ε) for the squared norms n that occur: r1, r2, r4, r9,
// r25 (≈ 1, √2, 2, 3, 5; the ≈ values in the comments drop ε).
const double kL2Eps = 1e-6;
double rootPlusEps(double squaredNorm) { return std::sqrt(squaredNorm + kL2Eps); }

TEST(Hand, GatedDeltaNet) {
  HandCase c{"gated_delta_net", {{"d", 2}}};
  const double r1 = rootPlusEps(1), r4 = rootPlusEps(4), r9 = rootPlusEps(9),
               r25 = rootPlusEps(25), sqrtD = std::sqrt(2.0);
  // t=1: W0 = 0, so the decay σ(alpha) = ½ does not act. k=[3,4] → l2n = [3,4]/r25;
  //   v=[4,8], β = σ(ln 3) = ¾, v̄ = 0: W1 = [3,4]/r25 ⊗ [3,6] = [[9,18],[12,24]]/r25.
  //   q=[1,0] → l2n(q)/√d = [1,0]/(r1 √2); y1 = row0(W1)/(r1 √2) = [9,18]/(r25 r1 √2) ≈ [1.273,2.546].
  // t=2: a = σ(ln 3) = ¾ (alpha), β = σ(0) = ½ (beta: swapping the two gates changes both).
  //   a W1 = [[6.75,13.5],[9,18]]/r25; k=[0,2] → l2n = [0,2/r4];
  //   v̄ = read(a W1, l2n(k)) = (2/r4)[9,18]/r25 ≈ [1.8,3.6] (the decayed weight is read);
  //   v=[1,−1]: u = ½(v − v̄) ≈ [−0.4,−2.3]; W2 = a W1 + [0,2/r4] ⊗ u: row0 = [6.75,13.5]/r25,
  //   row1 = [9,18]/r25 + (2/r4) u ≈ [1.4,1.3].
  //   q=[0,−3] → l2n(q)/√d = [0,−3/(r9 √2)]; y2 = −3/(r9 √2) row1(W2) ≈ [−0.990,−0.919].
  const double n = 1 / r25;
  const std::vector<double> vbar{2 / r4 * 9 * n, 2 / r4 * 18 * n};
  const std::vector<double> u{0.5 * (1 - vbar[0]), 0.5 * (-1 - vbar[1])};
  const std::vector<double> row1{9 * n + 2 / r4 * u[0], 18 * n + 2 / r4 * u[1]};
  const double read2 = -3 / (r9 * sqrtD);
  c.seq = {{"q", {{1, 0}, {0, -3}}},
           {"k", {{3, 4}, {0, 2}}},
           {"v", {{4, 8}, {1, -1}}},
           {"beta", {{kLn3}, {0}}},
           {"alpha", {{0}, {kLn3}}}};
  c.y = {{9 * n / (r1 * sqrtD), 18 * n / (r1 * sqrtD)}, {read2 * row1[0], read2 * row1[1]}};
  c.statesAfter[0] = {{"W", {9 * n, 18 * n, 12 * n, 24 * n}}};
  c.statesAfter[1] = {{"W", {6.75 * n, 13.5 * n, row1[0], row1[1]}}};
  EXPECT_NEAR(c.y[1][0], -0.98995, 1e-4); // the ≈ of the comment
  EXPECT_NEAR(c.y[1][1], -0.91924, 1e-4);
  checkBothDtypes(c);
}

TEST(Hand, Retnet) {
  HandCase c{"retnet", {{"d", 2}}};
  // decay = ln 3 → γ = ¾ (a param: the same every step).
  // t=1: k=[1,2], v=[4,−4]: W1 = [[4,−4],[8,−8]]; q=[1,1]: y1 = row0 + row1 = [12,−12].
  // t=2: k=[0,1], v=[2,3]: W2 = ¾ W1 + [[0,0],[2,3]] = [[3,−3],[8,−3]];
  //   q=[2,−1]: y2 = 2 row0 − row1 = [−2,−3] (transposed W would give [9,19]).
  c.params = {{"decay", {kLn3}}};
  c.seq = {{"q", {{1, 1}, {2, -1}}}, {"k", {{1, 2}, {0, 1}}}, {"v", {{4, -4}, {2, 3}}}};
  c.y = {{12, -12}, {-2, -3}};
  c.statesAfter[0] = {{"W", {4, -4, 8, -8}}};
  c.statesAfter[1] = {{"W", {3, -3, 8, -3}}};
  checkBothDtypes(c);
}

TEST(Hand, Gla) {
  HandCase c{"gla", {{"d", 2}}};
  // t=1: W0 = 0, so g = [5,−5] does not act. k=[1,2], v=[4,−4]: W1 = [[4,−4],[8,−8]];
  //   q=[1,1]: y1 = [12,−12].
  // t=2: g=[0, ln 3] → a = [½, ¾], one decay per key row: row0 = ½[4,−4] + 1·[2,6] = [4,4],
  //   row1 = ¾[8,−8] + 0 = [6,−6]; q=[1,−1]: y2 = row0 − row1 = [−2,10]
  //   (a decay per value column instead would give W2 = [[4,3],[4,−6]], y2 = [0,9]).
  c.seq = {{"q", {{1, 1}, {1, -1}}},
           {"k", {{1, 2}, {1, 0}}},
           {"v", {{4, -4}, {2, 6}}},
           {"g", {{5, -5}, {0, kLn3}}}};
  c.y = {{12, -12}, {-2, 10}};
  c.statesAfter[0] = {{"W", {4, -4, 8, -8}}};
  c.statesAfter[1] = {{"W", {4, 4, 6, -6}}};
  checkBothDtypes(c);
}

TEST(Hand, DeltaProduct) {
  HandCase c{"delta_product", {{"d", 2}}};
  const double r1 = rootPlusEps(1), r2 = rootPlusEps(2), r4 = rootPlusEps(4),
               r25 = rootPlusEps(25);
  // t=1, first write: k1=[3,4] → l2n = [3,4]/r25; v1=[5,10]; β1 = σ(0) = ½; v̄ = 0:
  //   W' = [3,4]/r25 ⊗ [2.5,5] = [[7.5,15],[10,20]]/r25.
  //   Second write: k2=[0,−2] → l2n = [0,−2/r4]; v̄ = −(2/r4) row1(W') ≈ [−2,−4];
  //   v2=[1,1], β2 = σ(ln 3) = ¾: u = ¾(v2 − v̄) ≈ [2.25,3.75];
  //   W1 = W' + [0,−2/r4] ⊗ u: row0 = [7.5,15]/r25, row1 = [10,20]/r25 − (2/r4) u ≈ [−0.25,0.25].
  //   q=[0,1] → l2n = [0,1/r1]; y1 = row1(W1)/r1 ≈ [−0.25,0.25].
  // t=2: every key 0, so l2n(0) = 0 (ε keeps it finite) and both writes leave W1 as it is;
  //   q=[1,1] → l2n = [1,1]/r2; y2 = (row0 + row1)/r2 ≈ [1.25,3.25]/√2 = [0.884,2.298].
  const double n = 1 / r25;
  const std::vector<double> vbar{-2 / r4 * 10 * n, -2 / r4 * 20 * n};
  const std::vector<double> u{0.75 * (1 - vbar[0]), 0.75 * (1 - vbar[1])};
  const std::vector<double> row0{7.5 * n, 15 * n};
  const std::vector<double> row1{10 * n - 2 / r4 * u[0], 20 * n - 2 / r4 * u[1]};
  const std::vector<double> W1{row0[0], row0[1], row1[0], row1[1]};
  c.seq = {{"q", {{0, 1}, {1, 1}}},     {"k1", {{3, 4}, {0, 0}}}, {"v1", {{5, 10}, {0, 0}}},
           {"beta1", {{0}, {0}}},       {"k2", {{0, -2}, {0, 0}}}, {"v2", {{1, 1}, {0, 0}}},
           {"beta2", {{kLn3}, {0}}}};
  c.y = {{row1[0] / r1, row1[1] / r1}, {(row0[0] + row1[0]) / r2, (row0[1] + row1[1]) / r2}};
  c.statesAfter[0] = {{"W", W1}};
  c.statesAfter[1] = {{"W", W1}};
  EXPECT_NEAR(c.y[0][0], -0.25, 1e-5); // the ≈ of the comment
  EXPECT_NEAR(c.y[0][1], 0.25, 1e-5);
  checkBothDtypes(c);
}

// --- Part 2: invariants ------------------------------------------------------

/// An independent scalar delta-rule layer (plain loops, no torch), used as the
/// oracle for delta_net and for rdn without recurrence: for every (b, h, t)
///   W[e][m] += κ[e] β (v[m] − Σ_e' W[e'][m] κ[e']),  y[m] = Σ_e W[e][m] ρ[e]
/// with κ = keyMap(k), ρ = keyMap(q), β = σ(beta). Returns y [B, H, T, d].
torch::Tensor scalarDeltaRule(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &v,
                              const torch::Tensor &beta,
                              std::vector<double> (*keyMap)(std::vector<double>)) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), d = q.size(3);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>(),
       ba = beta.accessor<double, 4>();
  torch::Tensor y = torch::zeros({B, H, T, d}, torch::kDouble);
  auto ya = y.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<std::vector<double>> W(d, std::vector<double>(d, 0.0));
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> kRaw(d), qRaw(d);
        for (int64_t e = 0; e < d; ++e) {
          kRaw[e] = ka[b][h][t][e];
          qRaw[e] = qa[b][h][t][e];
        }
        const std::vector<double> kappa = keyMap(kRaw), rho = keyMap(qRaw);
        const double strength = logistic(ba[b][h][t][0]);
        std::vector<double> update(d);
        for (int64_t m = 0; m < d; ++m) {
          double retrieved = 0;
          for (int64_t e = 0; e < d; ++e)
            retrieved += W[e][m] * kappa[e];
          update[m] = strength * (va[b][h][t][m] - retrieved);
        }
        for (int64_t e = 0; e < d; ++e)
          for (int64_t m = 0; m < d; ++m)
            W[e][m] += kappa[e] * update[m];
        for (int64_t m = 0; m < d; ++m) {
          double out = 0;
          for (int64_t e = 0; e < d; ++e)
            out += W[e][m] * rho[e];
          ya[b][h][t][m] = out;
        }
      }
    }
  return y;
}

std::vector<double> scalarSoftmax(std::vector<double> x) {
  double total = 0;
  for (double &each : x)
    total += (each = std::exp(each));
  for (double &each : x)
    each /= total;
  return x;
}

std::vector<double> scalarSumNormElu1(std::vector<double> x) {
  double total = 0;
  for (double &each : x)
    total += (each = each >= 0 ? each + 1 : std::exp(each));
  for (double &each : x)
    each /= total;
  return x;
}

std::vector<double> scalarL2Norm(std::vector<double> x) {
  double squares = 0;
  for (double each : x)
    squares += each * each;
  for (double &each : x)
    each /= std::sqrt(squares + 1e-6);
  return x;
}

TEST(Invariant, DeltaNetMatchesScalarLoop) {
  const auto layer = makeReferenceLayer("delta_net", {{"d", 4}});
  const TensorMap in = randomInputs(*layer, 2, 3, 5, torch::kDouble, 11, false);
  const torch::Tensor expected = scalarDeltaRule(in.at("q"), in.at("k"), in.at("v"), in.at("beta"),
                                                 scalarSumNormElu1);
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
}

TEST(Invariant, DeltaNetStoresAndRetrievesExactly) {
  // φ(k) = sumnorm(elu1(k)) is never exactly one-hot, but k = −40 off the
  // chosen index makes elu1 = e^−40 ≈ 4e−18 there, so φ(k) is one-hot to
  // within 1e−17; beta = 40 makes σ(beta) = 1 to double precision. Then the
  // delta rule writes v_t into row t *replacing* what was there, and a
  // one-hot query reads a row back exactly.
  const int64_t d = 4, T = d + 1;
  const auto layer = makeReferenceLayer("delta_net", {{"d", d}});
  auto oneHotLike = [&](int64_t index) {
    torch::Tensor x = torch::full({d}, -40.0, torch::kDouble);
    x[index] = 0.0;
    return x;
  };
  torch::manual_seed(3);
  const torch::Tensor values = torch::randn({T, d}, torch::kDouble);
  std::vector<torch::Tensor> qs, ks;
  for (int64_t t = 0; t < d; ++t) { // store v_t at key t, read key t back
    ks.push_back(oneHotLike(t));
    qs.push_back(oneHotLike(t));
  }
  ks.push_back(oneHotLike(0)); // overwrite key 0 with v_d, read the older key 1
  qs.push_back(oneHotLike(1));
  TensorMap in{{"q", torch::stack(qs).reshape({1, 1, T, d})},
               {"k", torch::stack(ks).reshape({1, 1, T, d})},
               {"v", values.reshape({1, 1, T, d})},
               {"beta", torch::full({1, 1, T, 1}, 40.0, torch::kDouble)}};
  const TensorMap out = layer->forward(in);
  const torch::Tensor y = out.at("y").reshape({T, d});
  for (int64_t t = 0; t < d; ++t)
    EXPECT_TRUE(tensorsNear(y[t], values[t], 1e-12)) << "step " << t;
  EXPECT_TRUE(tensorsNear(y[d], values[1], 1e-12)) << "older memory after an overwrite";
  torch::Tensor expectedW = values.slice(0, 0, d).clone();
  expectedW[0] = values[d]; // replaced, not summed
  EXPECT_TRUE(tensorsNear(out.at("final.W").reshape({d, d}), expectedW, 1e-12));
}

TEST(Invariant, LinearTransformerEqualsQuadraticAttention) {
  // y_t = Σ_{s≤t} (φ(q_t)·φ(k_s)) v_s / (Σ_{s≤t} φ(q_t)·φ(k_s) + 1e-5).
  const auto layer = makeReferenceLayer("linear_transformer", {{"d", 4}});
  const TensorMap in = randomInputs(*layer, 2, 3, 6, torch::kDouble, 5, false);
  const torch::Tensor phiQ = torch::elu(in.at("q")) + 1, phiK = torch::elu(in.at("k")) + 1;
  const torch::Tensor causal = torch::ones({6, 6}, torch::kDouble).tril();
  const torch::Tensor scores = torch::matmul(phiQ, phiK.transpose(-1, -2)) * causal;
  const torch::Tensor expected = torch::matmul(scores, in.at("v")) / (scores.sum(-1, true) + 1e-5);
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
}

TEST(Invariant, RdnWithoutRecurrenceIsSoftmaxDeltaRule) {
  const auto layer = makeReferenceLayer("rdn", {{"d", 3}});
  TensorMap in = randomInputs(*layer, 2, 2, 5, torch::kDouble, 7, false);
  for (const char *param : {"R_q", "R_k", "R_v", "r_b"})
    in[param] = torch::zeros_like(in.at(param));
  const torch::Tensor expected =
      scalarDeltaRule(in.at("q"), in.at("k"), in.at("v"), in.at("beta"), scalarSoftmax);
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
  // And the params do matter once they are not zero (a constant R_k would
  // not: softmax ignores a shift shared by all entries).
  in["R_k"] = torch::randn_like(in.at("R_k"));
  EXPECT_GT(maxAbsDiff(layer->forward(in).at("y"), expected), 1e-3);
}

TEST(Invariant, GatedDeltaNetWithoutDecayIsAnL2DeltaRule) {
  // alpha = 40: σ = 1 − 4e−18, i.e. 1 in double precision, so W_t is the delta
  // rule with l2n keys; the query l2n(q)/√d scales y by 1/√d.
  const int64_t d = 4;
  const auto layer = makeReferenceLayer("gated_delta_net", {{"d", d}});
  TensorMap in = randomInputs(*layer, 2, 3, 5, torch::kDouble, 41, false);
  in["alpha"] = torch::full_like(in.at("alpha"), 40.0);
  const torch::Tensor expected =
      scalarDeltaRule(in.at("q"), in.at("k"), in.at("v"), in.at("beta"), scalarL2Norm) / 2.0;
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
  in["alpha"] = torch::zeros_like(in.at("alpha")); // a = ½: the decay must act
  EXPECT_GT(maxAbsDiff(layer->forward(in).at("y"), expected), 1e-3);
}

TEST(Invariant, DeltaProductWithOneKeyIsAnL2DeltaRule) {
  // k2 = 0: l2n(0) = 0, so the second write adds 0 ⊗ (…) and W_t is the delta
  // rule of (l2n(k1), v1, σ(beta1)); y reads it with l2n(q).
  const auto layer = makeReferenceLayer("delta_product", {{"d", 3}});
  TensorMap in = randomInputs(*layer, 2, 2, 5, torch::kDouble, 43, false);
  in["k2"] = torch::zeros_like(in.at("k2"));
  const torch::Tensor expected =
      scalarDeltaRule(in.at("q"), in.at("k1"), in.at("v1"), in.at("beta1"), scalarL2Norm);
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
  in["k2"] = torch::randn_like(in.at("k2")); // and the second write does act
  EXPECT_GT(maxAbsDiff(layer->forward(in).at("y"), expected), 1e-3);
}

TEST(Invariant, RetnetEqualsDecayedAttention) {
  // Unrolled from W_0: y_t = γ^t read(W_0, q_t) + Σ_{s≤t} γ^(t−s) (q_t·k_s) v_s
  // (t counted from 1), γ = σ(decay) per head.
  const int64_t T = 6;
  const auto layer = makeReferenceLayer("retnet", {{"d", 4}});
  TensorMap in = randomInputs(*layer, 2, 3, T, torch::kDouble, 47, true);
  in["decay"] = in.at("decay") + 1.0;
  const torch::Tensor gamma = torch::sigmoid(in.at("decay")).view({1, 3, 1, 1});
  const torch::Tensor steps = torch::arange(T, torch::kDouble);
  const torch::Tensor lag = (steps.view({T, 1}) - steps.view({1, T})).clamp_min(0); // t − s
  const torch::Tensor causal = torch::ones({T, T}, torch::kDouble).tril();
  const torch::Tensor scores =
      torch::matmul(in.at("q"), in.at("k").transpose(-1, -2)) * gamma.pow(lag) * causal;
  const torch::Tensor fromInit =
      gamma.pow(steps.view({T, 1}) + 1) * torch::matmul(in.at("q"), in.at("init.W"));
  const torch::Tensor expected = torch::matmul(scores, in.at("v")) + fromInit;
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
}

TEST(Invariant, GlaEqualsDecayedAttention) {
  // Unrolled: y_t[m] = Σ_{s≤t} Σ_e q_t[e] k_s[e] v_s[m] Π_{s<r≤t} a_r[e], with
  // the product as exp(L_t[e] − L_s[e]), L_t = Σ_{r≤t} log σ(g_r).
  const int64_t T = 6;
  const auto layer = makeReferenceLayer("gla", {{"d", 3}});
  const TensorMap in = randomInputs(*layer, 2, 2, T, torch::kDouble, 53, false);
  const torch::Tensor logDecay = torch::log_sigmoid(in.at("g")).cumsum(2); // L [B, H, T, d]
  const torch::Tensor decayFromTo =
      torch::exp(logDecay.unsqueeze(3) - logDecay.unsqueeze(2)); // [B, H, t, s, d]
  const torch::Tensor causal = torch::ones({T, T}, torch::kDouble).tril();
  const torch::Tensor scores =
      (in.at("q").unsqueeze(3) * in.at("k").unsqueeze(2) * decayFromTo).sum(-1) * causal;
  const torch::Tensor expected = torch::matmul(scores, in.at("v"));
  EXPECT_TRUE(tensorsNear(layer->forward(in).at("y"), expected, 1e-12));
}

TEST(Invariant, DeltaRnnWithoutRecurrentInputsIsDeltaNet) {
  // k_r = v_r = beta_r = 0 and R_0 = 0: R_t = R_{t−1} + softmax(0) ⊗ ½(0 − read(R_{t−1}, ·))
  // stays 0, so the R-read of the (uniform, then any) softmax(y_{t−1}) is 0 and y = z.
  const auto rnn = makeReferenceLayer("delta_rnn", {{"d", 3}});
  const auto net = makeReferenceLayer("delta_net", {{"d", 3}});
  TensorMap in = randomInputs(*rnn, 2, 2, 5, torch::kDouble, 9, false);
  for (const char *name : {"k_r", "v_r", "beta_r"})
    in[name] = torch::zeros_like(in.at(name));
  const TensorMap netIn{{"q", in.at("q")}, {"k", in.at("k")}, {"v", in.at("v")}, {"beta", in.at("beta")}};
  const TensorMap rnnOut = rnn->forward(in), netOut = net->forward(netIn);
  EXPECT_TRUE(tensorsNear(rnnOut.at("y"), netOut.at("y"), 1e-14));
  EXPECT_TRUE(tensorsNear(rnnOut.at("final.W"), netOut.at("final.W"), 1e-14));
  EXPECT_TRUE(tensorsNear(rnnOut.at("final.R"), torch::zeros_like(rnnOut.at("final.R")), 0));
}

TEST(Invariant, DeltaRnnWithFrozenRAddsItsRead) {
  // beta_r = −60 gives σ = 9e−27, so R stays R_0 to double precision; with
  // init.R and init.y given, y_t = z_t + read(R_0, softmax(y_{t−1})) where z is
  // delta_net's output (with the same init.W).
  const auto rnn = makeReferenceLayer("delta_rnn", {{"d", 3}});
  const auto net = makeReferenceLayer("delta_net", {{"d", 3}});
  TensorMap in = randomInputs(*rnn, 2, 2, 4, torch::kDouble, 13, true);
  in["beta_r"] = torch::full_like(in.at("beta_r"), -60.0);
  const TensorMap netIn{{"q", in.at("q")},       {"k", in.at("k")},
                        {"v", in.at("v")},       {"beta", in.at("beta")},
                        {"init.W", in.at("init.W")}};
  const torch::Tensor z = net->forward(netIn).at("y");
  const torch::Tensor R0 = in.at("init.R");
  torch::Tensor previous = in.at("init.y");
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < 4; ++t) {
    const torch::Tensor s = torch::softmax(previous, -1);
    // read(R, s)[m] = Σ_e R[e, m] s[e]
    previous = z.select(2, t) + (R0 * s.unsqueeze(-1)).sum(-2);
    ys.push_back(previous);
  }
  const TensorMap out = rnn->forward(in);
  EXPECT_TRUE(tensorsNear(out.at("y"), torch::stack(ys, 2), 1e-12));
  EXPECT_TRUE(tensorsNear(out.at("final.R"), R0, 1e-12));
}

TEST(Invariant, CarriedStatesEqualOneLongCall) {
  // Splitting a sequence and passing final.<state> as init.<state> must give
  // the same y and final states as one call (from random initial states).
  for (const auto &name : referenceLayerNames()) {
    SCOPED_TRACE(name);
    const auto layer = makeReferenceLayer(name, dimsFor(name, 3, 4));
    const TensorMap whole = randomInputs(*layer, 2, 2, 5, torch::kDouble, 17, true);
    const TensorMap expected = layer->forward(whole);

    TensorMap first = whole, second = whole;
    for (const auto &spec : layer->signature().seq) {
      first[spec.name] = whole.at(spec.name).slice(2, 0, 2);
      second[spec.name] = whole.at(spec.name).slice(2, 2, 5);
    }
    const TensorMap firstOut = layer->forward(first);
    for (const auto &spec : layer->signature().states)
      second[initName(spec.name)] = firstOut.at(finalName(spec.name));
    const TensorMap secondOut = layer->forward(second);

    EXPECT_TRUE(tensorsNear(torch::cat({firstOut.at("y"), secondOut.at("y")}, 2),
                            expected.at("y"), 1e-12));
    for (const auto &spec : layer->signature().states)
      EXPECT_TRUE(tensorsNear(secondOut.at(finalName(spec.name)),
                              expected.at(finalName(spec.name)), 1e-12))
          << spec.name;
    // The initial states matter (the test would be vacuous otherwise).
    TensorMap zeroInit = whole;
    for (const auto &spec : layer->signature().states)
      zeroInit.erase(initName(spec.name));
    EXPECT_GT(maxAbsDiff(layer->forward(zeroInit).at("y"), expected.at("y")), 1e-6);
  }
}

TEST(Invariant, Float32AgreesWithFloat64) {
  for (const auto &name : referenceLayerNames()) {
    SCOPED_TRACE(name);
    const auto layer = makeReferenceLayer(name, dimsFor(name, 4, 6));
    const TensorMap in64 = randomInputs(*layer, 2, 2, 4, torch::kDouble, 19, true);
    TensorMap in32;
    for (const auto &[key, tensor] : in64)
      in32[key] = tensor.to(torch::kFloat);
    const TensorMap out64 = layer->forward(in64), out32 = layer->forward(in32);
    ASSERT_EQ(out32.at("y").scalar_type(), torch::kFloat);
    for (const auto &[key, tensor] : out64)
      EXPECT_TRUE(tensorsNear(out32.at(key), tensor, 1e-5)) << key;
  }
}

TEST(Invariant, EmptySequenceKeepsStates) {
  const auto layer = makeReferenceLayer("delta_rnn", {{"d", 3}});
  const TensorMap in = randomInputs(*layer, 2, 2, 0, torch::kDouble, 23, true);
  const TensorMap out = layer->forward(in);
  EXPECT_EQ(out.at("y").sizes(), torch::IntArrayRef({2, 2, 0, 3}));
  EXPECT_TRUE(tensorsNear(out.at("final.W"), in.at("init.W"), 0));
}

// --- Part 3: the layer factory and input validation -------------------------

TEST(Layer, NamesSignaturesAndDefaultDims) {
  const std::vector<std::string> expected{
      "linear_transformer", "delta_net", "delta_mlp", "delta_rnn",    "delta_lstm",
      "rdn",                "gated_delta_net", "retnet", "gla", "delta_product"};
  EXPECT_EQ(referenceLayerNames(), expected);
  // Only retnet asks for a param's initial value (models/retnet.mlir's
  // fwp.param_init); the others take the model's defaults.
  for (const auto &name : referenceLayerNames())
    EXPECT_EQ(makeReferenceLayer(name)->paramInits(),
              name == "retnet" ? (std::map<std::string, std::string>{{"decay", "linspace:3.0:7.0"}})
                               : (std::map<std::string, std::string>{}))
        << name;
  const auto retnet = makeReferenceLayer("retnet");
  ASSERT_EQ(retnet->signature().params.size(), 1u);
  EXPECT_EQ(retnet->signature().params[0].name, "decay");
  EXPECT_EQ(retnet->signature().params[0].shape, (std::vector<std::string>{"1"}));
  const auto product = makeReferenceLayer("delta_product");
  std::vector<std::string> productSeq;
  for (const auto &spec : product->signature().seq)
    productSeq.push_back(spec.name);
  EXPECT_EQ(productSeq, (std::vector<std::string>{"q", "k1", "v1", "beta1", "k2", "v2", "beta2"}));
  EXPECT_EQ(makeReferenceLayer("delta_net")->dims(), (Dims{{"d", 16}}));
  EXPECT_EQ(makeReferenceLayer("delta_mlp")->dims(), (Dims{{"d", 16}, {"d_ff", 64}}));
  const auto lstm = makeReferenceLayer("delta_lstm");
  EXPECT_EQ(lstm->signature().seq.size(), 21u); // 15 d + 6 scalars
  EXPECT_EQ(lstm->signature().states.size(), 8u);
  const auto rdn = makeReferenceLayer("rdn");
  std::vector<std::string> params;
  for (const auto &spec : rdn->signature().params)
    params.push_back(spec.name);
  EXPECT_EQ(params, (std::vector<std::string>{"R_q", "R_k", "R_v", "r_b"}));
  EXPECT_EQ(resolveShape(makeReferenceLayer("delta_mlp", {{"d", 3}, {"d_ff", 5}})->signature().states[0],
                         {{"d", 3}, {"d_ff", 5}}),
            (std::vector<int64_t>{3, 5}));
}

TEST(Layer, FactoryRejectsUnknownNamesAndDims) {
  EXPECT_TRUE(throwsErrorMentioning([] { makeReferenceLayer("delta_gru"); },
                                    {"unknown layer 'delta_gru'", "delta_net"}));
  EXPECT_TRUE(throwsErrorMentioning([] { makeReferenceLayer("delta_net", {{"d_ff", 8}}); },
                                    {"delta_net", "no dim 'd_ff'"}));
  EXPECT_TRUE(throwsErrorMentioning([] { makeReferenceLayer("rdn", {{"d", 0}}); }, {"d = 0"}));
}

class Validation : public ::testing::Test {
protected:
  std::unique_ptr<FastWeightLayer> layer = makeReferenceLayer("delta_net", {{"d", 4}});
  TensorMap inputs = randomInputs(*layer, 2, 3, 5, torch::kFloat, 29, true);
};

TEST_F(Validation, AcceptsTheContract) { EXPECT_NO_THROW(layer->forward(inputs)); }

TEST_F(Validation, MissingTensor) {
  inputs.erase("k");
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); },
                                    {"missing tensor 'k'", "[B, H, T, d]"}));
}

TEST_F(Validation, UnexpectedTensor) {
  inputs["init.Z"] = inputs.at("init.W");
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); },
                                    {"unexpected tensor 'init.Z'", "init.W"}));
}

TEST_F(Validation, WrongShape) {
  inputs["v"] = torch::zeros({2, 3, 5, 5});
  EXPECT_TRUE(throwsErrorMentioning(
      [&] { layer->forward(inputs); },
      {"'v'", "[2, 3, 5, 5]", "expected [B, H, T, d] = [2, 3, 5, 4]"}));
  inputs["v"] = torch::zeros({2, 3, 4, 4}); // T differs from q's
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); }, {"'v'", "[2, 3, 5, 4]"}));
  inputs["v"] = torch::zeros({2, 3, 5, 4});
  inputs["beta"] = torch::zeros({2, 3, 5}); // scalars keep their trailing 1
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); },
                                    {"'beta'", "[B, H, T, 1] = [2, 3, 5, 1]"}));
  inputs["beta"] = torch::zeros({2, 3, 5, 1});
  inputs["init.W"] = torch::zeros({2, 3, 4});
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); },
                                    {"'init.W'", "[B, H, d, d] = [2, 3, 4, 4]"}));
  inputs["init.W"] = torch::zeros({2, 3, 4, 4});
  inputs["q"] = torch::zeros({2, 3, 5});
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); }, {"'q'", "[2, 3, 5]"}));
}

TEST_F(Validation, WrongParamShape) {
  const auto rdn = makeReferenceLayer("rdn", {{"d", 3}});
  TensorMap in = randomInputs(*rdn, 2, 2, 3, torch::kFloat, 1, false);
  in["R_v"] = torch::zeros({2, 3, 4});
  EXPECT_TRUE(throwsErrorMentioning([&] { rdn->forward(in); },
                                    {"'R_v'", "param", "[H, d, d] = [2, 3, 3]"}));
}

TEST_F(Validation, DtypeMismatch) {
  inputs["beta"] = inputs.at("beta").to(torch::kDouble);
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); },
                                    {"'beta'", "float64", "float32"}));
  for (auto &[name, tensor] : inputs)
    tensor = tensor.to(torch::kHalf);
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); },
                                    {"'q'", "float32 or float64"}));
}

TEST_F(Validation, DeviceMismatch) {
  // The meta device stands in for a GPU: the check must fire before any math.
  inputs["v"] = torch::empty({2, 3, 5, 4}, torch::TensorOptions().device(torch::kMeta));
  EXPECT_TRUE(throwsErrorMentioning([&] { layer->forward(inputs); }, {"'v'", "meta", "cpu"}));
}

TEST(InferDims, ReadsSizesOffTheTensorsAndReportsConflicts) {
  const auto mlp = makeReferenceLayer("delta_mlp", {{"d", 3}, {"d_ff", 5}});
  TensorMap in = randomInputs(*mlp, 1, 2, 2, torch::kFloat, 2, true);
  in["grad.y"] = torch::zeros({1}); // unknown names are ignored here
  EXPECT_EQ(inferDims(mlp->signature(), in), (Dims{{"d", 3}, {"d_ff", 5}}));
  EXPECT_TRUE(throwsErrorMentioning([&] { inferDims(mlp->signature(), in, {{"d_ff", 6}}); },
                                    {"d_ff = 5", "d_ff = 6 was given"}));
  in["k2"] = torch::zeros({1, 2, 2, 7});
  EXPECT_TRUE(throwsErrorMentioning([&] { inferDims(mlp->signature(), in); }, {"d_ff", "'k2'"}));
}

} // namespace
} // namespace fwp::test
