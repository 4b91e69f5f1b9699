// Adaptive input/softmax against a brute-force softmax written with scalar
// loops in double precision from the module's parameters.

#include "fwp/lm/Adaptive.h"
#include "fwp/runtime/Layer.h"

#include <gtest/gtest.h>

#include <cmath>

using fwp::lm::AdaptiveInputOutput;
using fwp::lm::AdaptiveOptions;

namespace {

/// x [d_model] -> (x P) for a projection P [d_model, d_i], or x itself.
std::vector<double> project(const std::vector<double> &x, const torch::Tensor &projection) {
  if (!projection.defined())
    return x;
  auto p = projection.to(torch::kFloat64).contiguous();
  auto a = p.accessor<double, 2>();
  std::vector<double> out(static_cast<size_t>(p.size(1)), 0.0);
  for (int64_t j = 0; j < p.size(1); ++j)
    for (int64_t m = 0; m < p.size(0); ++m)
      out[static_cast<size_t>(j)] += x[static_cast<size_t>(m)] * a[m][j];
  return out;
}

double dot(const std::vector<double> &x, const torch::Tensor &row) {
  auto r = row.to(torch::kFloat64).contiguous();
  double s = 0;
  for (int64_t j = 0; j < r.size(0); ++j)
    s += x[static_cast<size_t>(j)] * r[j].item<double>();
  return s;
}

double logSumExp(const std::vector<double> &v) {
  double m = -INFINITY;
  for (double x : v)
    m = std::max(m, x);
  double s = 0;
  for (double x : v)
    s += std::exp(x - m);
  return m + std::log(s);
}

/// log p(w | hidden row) for every w, from the definition.
std::vector<double> bruteForceLogProbs(const AdaptiveInputOutput &model, const torch::Tensor &hiddenRow) {
  auto h = hiddenRow.to(torch::kFloat64).contiguous();
  std::vector<double> x(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
  const auto &bounds = model->boundaries();
  const int64_t clusters = model->numClusters();
  // Head: shortlist words then one logit per tail cluster.
  auto hx = project(x, model->outputProjection(0));
  std::vector<double> head;
  auto w0 = model->outputWeight(0), b0 = model->outputBias(0);
  for (int64_t w = 0; w < bounds[1]; ++w)
    head.push_back(dot(hx, w0[w]) + b0[w].item<double>());
  for (int64_t c = 1; c < clusters; ++c)
    head.push_back(dot(hx, model->clusterWeight()[c - 1]) + model->clusterBias()[c - 1].item<double>());
  double headNorm = logSumExp(head);
  std::vector<double> out;
  for (int64_t w = 0; w < bounds[1]; ++w)
    out.push_back(head[static_cast<size_t>(w)] - headNorm);
  for (int64_t c = 1; c < clusters; ++c) {
    auto cx = project(x, model->outputProjection(c));
    auto wc = model->outputWeight(c), bc = model->outputBias(c);
    std::vector<double> tail;
    for (int64_t w = 0; w < bounds[c + 1] - bounds[c]; ++w)
      tail.push_back(dot(cx, wc[w]) + bc[w].item<double>());
    double tailNorm = logSumExp(tail);
    double clusterLogProb = head[static_cast<size_t>(bounds[1] + c - 1)] - headNorm;
    for (double t : tail)
      out.push_back(clusterLogProb + t - tailNorm);
  }
  return out;
}

struct Case {
  const char *name;
  AdaptiveOptions options;
};

std::vector<Case> cases() {
  std::vector<Case> all;
  AdaptiveOptions base;
  base.vocabSize = 23;
  base.dModel = 8;
  base.cutoffs = {4, 9, 15, 40}; // 40 >= 23 is dropped: four clusters
  all.push_back({"div1_tied", base});
  AdaptiveOptions untied = base;
  untied.tieWeights = false;
  untied.tieProjections = false;
  untied.dEmbed = 6;
  all.push_back({"div1_untied_projected", untied});
  AdaptiveOptions div2 = base;
  div2.divVal = 2;
  div2.dEmbed = 16;
  all.push_back({"div2_tied", div2});
  AdaptiveOptions div2Untied = div2;
  div2Untied.tieWeights = false;
  div2Untied.tieProjections = false;
  all.push_back({"div2_untied", div2Untied});
  AdaptiveOptions plain = base;
  plain.cutoffs = {30, 60};
  all.push_back({"no_clusters", plain});
  return all;
}

} // namespace

TEST(Adaptive, EffectiveCutoffsDropThoseBeyondTheVocabulary) {
  using fwp::lm::effectiveCutoffs;
  EXPECT_EQ(effectiveCutoffs({20000, 40000, 200000}, 267735), (std::vector<int64_t>{20000, 40000, 200000}));
  EXPECT_EQ(effectiveCutoffs({20000, 40000, 200000}, 30000), (std::vector<int64_t>{20000}));
  EXPECT_EQ(effectiveCutoffs({20000, 40000, 200000}, 20000), (std::vector<int64_t>{}));
  EXPECT_THROW(effectiveCutoffs({200, 100}, 1000), fwp::Error);
  EXPECT_THROW(effectiveCutoffs({0, 100}, 1000), fwp::Error);
}

TEST(Adaptive, LogProbabilitiesMatchBruteForceAndSumToOne) {
  for (const Case &c : cases()) {
    SCOPED_TRACE(c.name);
    torch::manual_seed(7);
    AdaptiveInputOutput model(c.options);
    // Non-zero biases so that a bias mix-up shows.
    {
      torch::NoGradGuard g;
      for (auto &p : model->parameters())
        p.add_(torch::randn(p.sizes()) * 0.3);
    }
    auto hidden = torch::randn({5, c.options.dModel});
    auto logProbs = model->logProbabilities(hidden);
    ASSERT_EQ(logProbs.sizes(), (std::vector<int64_t>{5, c.options.vocabSize}));
    auto sums = logProbs.to(torch::kFloat64).exp().sum(1);
    EXPECT_TRUE(torch::allclose(sums, torch::ones_like(sums), 0, 1e-5)) << sums;
    for (int64_t n = 0; n < 5; ++n) {
      auto expected = bruteForceLogProbs(model, hidden[n]);
      for (int64_t w = 0; w < c.options.vocabSize; ++w)
        EXPECT_NEAR(logProbs[n][w].item<double>(), expected[static_cast<size_t>(w)], 1e-4)
            << "row " << n << " word " << w;
    }
    // nll picks the same entries, in the order of the targets.
    auto targets = torch::tensor({22, 0, 9, 14, 3}, torch::kInt64);
    auto nll = model->nll(hidden, targets);
    for (int64_t n = 0; n < 5; ++n)
      EXPECT_NEAR(nll[n].item<double>(), -bruteForceLogProbs(model, hidden[n])[targets[n].item<int64_t>()], 1e-4);
  }
}

TEST(Adaptive, ClustersAndTyingAsSpecified) {
  auto all = cases();
  AdaptiveInputOutput tied(all[0].options);
  EXPECT_EQ(tied->boundaries(), (std::vector<int64_t>{0, 4, 9, 15, 23}));
  // One table [23, 8], a bias [23], cluster logits [3, 8] + [3]: nothing else.
  int64_t count = 0;
  for (auto &p : tied->parameters())
    count += p.numel();
  EXPECT_EQ(count, 23 * 8 + 23 + 3 * 8 + 3);
  EXPECT_EQ(tied->outputWeight(2).data_ptr(), tied->inputWeight(2).data_ptr());

  AdaptiveInputOutput div2(all[2].options);
  // Widths 16, 8, 4, 2; tail output projections are the input ones, the head's is its own.
  EXPECT_EQ(div2->clusterWidth(3), 2);
  EXPECT_EQ(div2->inputWeight(1).sizes(), (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(div2->outputProjection(1).data_ptr(), div2->inputProjection(1).data_ptr());
  EXPECT_NE(div2->outputProjection(0).data_ptr(), div2->inputProjection(0).data_ptr());
  int64_t expected = (4 * 16 + 5 * 8 + 6 * 4 + 8 * 2) + (8 * 16 + 8 * 8 + 8 * 4 + 8 * 2) + 8 * 16 + 23 + 3 * 16 + 3;
  count = 0;
  for (auto &p : div2->parameters())
    count += p.numel();
  EXPECT_EQ(count, expected);

  // A tied model's loss has gradients on the input table of the target's cluster.
  auto hidden = torch::randn({2, 8});
  div2->nll(hidden, torch::tensor({10, 20}, torch::kInt64)).sum().backward();
  auto grad = div2->named_parameters()["embedding_2"].grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad[10 - 9].abs().sum().item<double>(), 0.0);
}

TEST(Adaptive, EmbeddingLooksUpTheClusterTableAndProjects) {
  auto all = cases();
  for (int which : {0, 1, 2}) {
    torch::manual_seed(3);
    AdaptiveInputOutput model(all[static_cast<size_t>(which)].options);
    auto ids = torch::tensor({{0, 5, 22}, {9, 14, 3}}, torch::kInt64);
    auto out = model->embed(ids);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 8}));
    const auto &bounds = model->boundaries();
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t t = 0; t < 3; ++t) {
        int64_t id = ids[b][t].item<int64_t>();
        int64_t c = 0;
        while (id >= bounds[c + 1])
          ++c;
        auto vector = model->inputWeight(c)[id - bounds[c]];
        auto projection = model->inputProjection(c);
        auto expected = (projection.defined() ? torch::mv(projection, vector) : vector) * std::sqrt(8.0);
        EXPECT_TRUE(torch::allclose(out[b][t], expected, 1e-5, 1e-6)) << "case " << which << " id " << id;
      }
  }
}

TEST(Adaptive, RejectsBadShapes) {
  AdaptiveInputOutput model(cases()[0].options);
  EXPECT_THROW(model->nll(torch::randn({3, 7}), torch::zeros({3}, torch::kInt64)), fwp::Error);
  EXPECT_THROW(model->nll(torch::randn({3, 8}), torch::zeros({2}, torch::kInt64)), fwp::Error);
}

TEST(Adaptive, SinusoidalPositionsByHand) {
  auto p = fwp::lm::sinusoidalPositions(torch::tensor({0.0, 2.0}), 4);
  // w = [1, 10000^-0.5 = 0.01]
  auto expected = torch::tensor({{0.0, 0.0, 1.0, 1.0},
                                 {std::sin(2.0), std::sin(0.02), std::cos(2.0), std::cos(0.02)}});
  EXPECT_TRUE(torch::allclose(p, expected.to(torch::kFloat32), 1e-5, 1e-6)) << p;
  EXPECT_THROW(fwp::lm::sinusoidalPositions(torch::tensor({0.0}), 3), fwp::Error);
}
