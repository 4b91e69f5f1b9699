// Sliding-window and carry-over evaluation against brute-force references on a
// tiny recurrent model (a GRU under the adaptive softmax).

#include "fwp/lm/Adaptive.h"
#include "fwp/lm/Evaluate.h"

#include <gtest/gtest.h>

using namespace fwp::lm;
using fwp::TensorMap;

namespace {

class ToyRecurrentLm : public LanguageModel {
public:
  ToyRecurrentLm() {
    torch::manual_seed(11);
    AdaptiveOptions options;
    options.vocabSize = 13;
    options.dModel = 6;
    options.cutoffs = {5, 9};
    io_ = AdaptiveInputOutput(options);
    gru_ = torch::nn::GRU(torch::nn::GRUOptions(6, 6).batch_first(true));
    torch::NoGradGuard g;
    for (auto &p : gru_->parameters())
      p.mul_(3.0); // strong recurrence, so that lost state would show
  }
  std::pair<torch::Tensor, LmState> hidden(const torch::Tensor &inputs, const LmState &state) override {
    ++calls;
    auto x = io_->embed(inputs);
    torch::Tensor h0 = state.empty() ? torch::zeros({1, inputs.size(0), 6}) : state[0].at("init.h");
    auto [out, hn] = gru_->forward(x, h0);
    return {out, LmState{TensorMap{{"init.h", hn}}}};
  }
  torch::Tensor nll(const torch::Tensor &hidden, const torch::Tensor &targets) override {
    return io_->nll(hidden, targets);
  }
  torch::Device device() const override { return torch::kCPU; }
  int calls = 0;

private:
  AdaptiveInputOutput io_{nullptr};
  torch::nn::GRU gru_{nullptr};
};

torch::Tensor someTokens(int64_t n) {
  torch::manual_seed(5);
  return torch::randint(0, 13, {n}, torch::kInt32);
}

/// Every token j >= 1 scored from a fresh run over its own preceding context.
double bruteForceSlidingWindow(ToyRecurrentLm &model, const torch::Tensor &tokens, int64_t context) {
  torch::NoGradGuard g;
  auto all = tokens.to(torch::kInt64);
  double sum = 0;
  for (int64_t j = 1; j < all.size(0); ++j) {
    int64_t from = std::max<int64_t>(0, j - context);
    auto [hidden, state] = model.hidden(all.slice(0, from, j).unsqueeze(0), {});
    sum += model.nll(hidden[0].slice(0, j - from - 1, j - from), all.slice(0, j, j + 1)).item<double>();
  }
  return sum;
}

/// One unsegmented pass over row r of `rows` rows.
double onePass(ToyRecurrentLm &model, const torch::Tensor &tokens, int64_t rows, int64_t r) {
  torch::NoGradGuard g;
  int64_t length = tokens.size(0) / rows;
  auto row = tokens.to(torch::kInt64).slice(0, r * length, (r + 1) * length);
  auto [hidden, state] = model.hidden(row.slice(0, 0, length - 1).unsqueeze(0), {});
  return model.nll(hidden[0], row.slice(0, 1, length)).sum().item<double>();
}

} // namespace

TEST(Evaluate, SlidingWindowEqualsPerTokenBruteForce) {
  ToyRecurrentLm model;
  auto tokens = someTokens(40);
  for (int64_t context : {5, 8}) {
    for (int64_t perBatch : {1, 3, 64}) {
      auto result = evaluateSlidingWindow(model, tokens, context, perBatch);
      EXPECT_EQ(result.tokens, 39);
      EXPECT_NEAR(result.nllSum, bruteForceSlidingWindow(model, tokens, context), 1e-4 * 39)
          << "context " << context << " windows per batch " << perBatch;
    }
  }
  // A split shorter than the context: one window scores everything.
  auto shortTokens = someTokens(4);
  auto result = evaluateSlidingWindow(model, shortTokens, 10, 2);
  EXPECT_EQ(result.tokens, 3);
  EXPECT_NEAR(result.nllSum, bruteForceSlidingWindow(model, shortTokens, 10), 1e-4);
  // The context matters for this model (else the test above proves little).
  EXPECT_GT(std::abs(bruteForceSlidingWindow(model, tokens, 2) - bruteForceSlidingWindow(model, tokens, 8)), 1e-2);
}

TEST(Evaluate, SlidingWindowReportsProgressAndRejectsBadArguments) {
  ToyRecurrentLm model;
  auto tokens = someTokens(20);
  std::vector<std::pair<int64_t, int64_t>> calls;
  evaluateSlidingWindow(model, tokens, 5, 4, [&](int64_t done, int64_t total) { calls.push_back({done, total}); });
  // 1 first window + ceil(14 / 4) batches of later windows.
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_EQ(calls.back().first, 5);
  EXPECT_EQ(calls.back().second, 5);
  EXPECT_THROW(evaluateSlidingWindow(model, tokens, 0, 4), fwp::Error);
  EXPECT_THROW(evaluateSlidingWindow(model, someTokens(1), 4, 4), fwp::Error);
  EXPECT_THROW(evaluateSlidingWindow(model, tokens.to(torch::kFloat32), 4, 4), fwp::Error);
}

TEST(Evaluate, CarryOverEqualsOneLongPass) {
  ToyRecurrentLm model;
  auto tokens = someTokens(50);
  auto single = evaluateCarryOver(model, tokens, 1, 7);
  EXPECT_EQ(single.tokens, 49);
  EXPECT_NEAR(single.nllSum, onePass(model, tokens, 1, 0), 1e-4 * 49);

  // Two rows of 25 tokens: each its own unbroken pass.
  auto two = evaluateCarryOver(model, tokens, 2, 7);
  EXPECT_EQ(two.tokens, 48);
  EXPECT_NEAR(two.nllSum, onePass(model, tokens, 2, 0) + onePass(model, tokens, 2, 1), 1e-4 * 48);

  // Resetting the state per segment gives another number: the state matters.
  double reset = 0;
  {
    torch::NoGradGuard g;
    auto all = tokens.to(torch::kInt64);
    for (int64_t b = 0; b < 49; b += 7) {
      int64_t len = std::min<int64_t>(7, 49 - b);
      auto [hidden, state] = model.hidden(all.slice(0, b, b + len).unsqueeze(0), {});
      reset += model.nll(hidden[0], all.slice(0, b + 1, b + 1 + len)).sum().item<double>();
    }
  }
  EXPECT_GT(std::abs(reset - single.nllSum), 1e-2);
  EXPECT_NEAR(single.perplexity(), std::exp(single.nllSum / 49), 1e-9);
}

TEST(Evaluate, DetachStateDropsHistory) {
  auto x = torch::ones({2}, torch::requires_grad());
  LmState state{TensorMap{{"init.h", x * 2}}};
  ASSERT_TRUE(state[0]["init.h"].requires_grad());
  auto detached = detachState(state);
  EXPECT_FALSE(detached[0]["init.h"].requires_grad());
  EXPECT_TRUE(torch::equal(detached[0]["init.h"], torch::full({2}, 2.0)));
}
