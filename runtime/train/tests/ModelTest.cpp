// Model stacks: the fast-weight block's plumbing against a hand computation
// (with a fake layer), causality of every stack, state carry-over.

#include "FakeLayer.h"
#include "TestUtil.h"

#include "fwp/train/Model.h"

using namespace fwp::train;
using fwp::train::test::FakeLayer;

TEST(Model, FastWeightBlockSlicesMergesAndProjects) {
  torch::manual_seed(0);
  const int64_t B = 2, T = 5, H = 2, d = 3, D = H * d;
  auto layer = std::make_shared<FakeLayer>(d);
  FastWeightBlock block(D, H, /*dropout=*/0.0, layer);
  block->eval();
  // Non-trivial per-head param values (the block initialises vectors to 0).
  auto params = block->named_parameters(false);
  ASSERT_TRUE(params.contains("P"));
  EXPECT_EQ(params["P"].sizes(), torch::IntArrayRef({H, d}));
  EXPECT_TRUE(torch::equal(params["P"], torch::zeros({H, d})));
  {
    torch::NoGradGuard noGrad;
    params["P"].copy_(torch::randn({H, d}));
  }
  torch::Tensor x = torch::randn({B, T, D});
  torch::Tensor init = torch::randn({B, H, d});
  LayerState initState{{"S", init}}, finalState;
  torch::Tensor out = block->forward(x, &initState, &finalState);

  // By hand: LayerNorm, one projection to H x (d + 1) per step, head-major.
  auto all = block->named_parameters(true);
  torch::Tensor h = torch::layer_norm(x, {D}, all["norm.weight"], all["norm.bias"], 1e-5);
  torch::Tensor p = torch::matmul(h, all["slow_projection.weight"].t()); // [B, T, H*(d+1)]
  torch::Tensor expected = torch::zeros({B, T, D});
  torch::Tensor lastS = torch::zeros({B, H, d});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t head = 0; head < H; ++head) {
      torch::Tensor S = init[b][head].clone();
      for (int64_t t = 0; t < T; ++t) {
        torch::Tensor a = p[b][t].narrow(0, head * (d + 1), d);
        torch::Tensor g = p[b][t][head * (d + 1) + d];
        S = S + g * a + params["P"][head];
        expected[b][t].narrow(0, head * d, d).copy_(S);
      }
      lastS[b][head] = S;
    }
  expected = x + torch::matmul(expected, all["output_projection.weight"].t());
  EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5))
      << (out - expected).abs().max().item<double>();
  ASSERT_TRUE(finalState.count("S"));
  EXPECT_TRUE(torch::allclose(finalState["S"], lastS, 1e-5, 1e-5));
}

TEST(Model, FastWeightBlockTakesTheParamInitTheLayerAsksFor) {
  // The eager retnet asks for decay = linspace:3.0:7.0 over the heads (as its
  // compiled artifact does, from models/retnet.mlir), not the default 0.
  const int64_t H = 3, d = 4;
  std::shared_ptr<const fwp::FastWeightLayer> layer =
      fwp::makeReferenceLayer("retnet", {{"d", d}});
  FastWeightBlock block(H * d, H, /*dropout=*/0.0, layer);
  auto params = block->named_parameters(false);
  ASSERT_TRUE(params.contains("decay"));
  EXPECT_TRUE(torch::equal(params["decay"], torch::tensor({3.0f, 5.0f, 7.0f}).view({H, 1})))
      << params["decay"];
}

TEST(Model, FastWeightBlockRejectsMissingOutputs) {
  struct Broken : FakeLayer {
    using FakeLayer::FakeLayer;
    fwp::TensorMap forward(const fwp::TensorMap &inputs) const override {
      auto out = FakeLayer::forward(inputs);
      out.erase("final.S");
      return out;
    }
  };
  FastWeightBlock block(4, 2, 0.0, std::make_shared<Broken>(2));
  LayerState final;
  fwp::train::test::expectErrorContaining<fwp::Error>(
      [&] { block->forward(torch::randn({1, 3, 4}), nullptr, &final); },
      "returned no 'final.S'");
}

namespace {

/// Output at steps < k must not depend on tokens at steps >= k.
void expectCausal(TokenModelImpl &model, int64_t vocab) {
  model.eval();
  torch::NoGradGuard noGrad;
  torch::Tensor tokens = torch::randint(1, vocab, {2, 12}, torch::kLong);
  torch::Tensor changed = tokens.clone();
  changed.narrow(1, 7, 5).random_(1, vocab);
  torch::Tensor a = model.forward(tokens), b = model.forward(changed);
  EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 7), b.narrow(1, 0, 7), 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 7, 5), b.narrow(1, 7, 5), 1e-5, 1e-6));
}

ModelOptions smallOptions(const std::string &kind) {
  ModelOptions options;
  options.kind = kind;
  options.inputVocab = 20;
  options.classes = 7;
  options.stack.layers = 2;
  options.stack.hidden = 16;
  options.stack.heads = 4;
  options.stack.ffMult = 2;
  options.stack.dropout = 0.0;
  options.embedding = 16;
  options.positionalEncoding = kind == "transformer";
  return options;
}

} // namespace

TEST(Model, BaselinesAreCausal) {
  torch::manual_seed(1);
  for (const char *kind : {"lstm", "transformer"}) {
    SCOPED_TRACE(kind);
    TokenModel model(smallOptions(kind), torch::kCPU);
    EXPECT_EQ(model->forward(torch::ones({3, 4}, torch::kLong)).sizes(),
              torch::IntArrayRef({3, 4, 7}));
    expectCausal(*model, 20);
  }
}

TEST(Model, FastWeightStackIsCausalAndCarriesState) {
  torch::manual_seed(2);
  StackOptions options = smallOptions("fwp").stack;
  FastWeightStackImpl stack(options, std::make_shared<FakeLayer>(4));
  stack.eval();
  torch::NoGradGuard noGrad;
  torch::Tensor x = torch::randn({2, 10, 16});
  // Running two halves with the state carried over equals one full run.
  StackState mid, end;
  torch::Tensor whole = stack.forward(x, nullptr, &end);
  torch::Tensor first = stack.forward(x.narrow(1, 0, 4), nullptr, &mid);
  StackState end2;
  torch::Tensor second = stack.forward(x.narrow(1, 4, 6), &mid, &end2);
  EXPECT_TRUE(torch::allclose(torch::cat({first, second}, 1), whole, 1e-4, 1e-5));
  ASSERT_EQ(end.size(), 2u);
  EXPECT_TRUE(torch::allclose(end[1].at("S"), end2[1].at("S"), 1e-4, 1e-5));
  // ... and a change of the future leaves the past alone.
  torch::Tensor y = x.clone();
  y.narrow(1, 6, 4).normal_();
  EXPECT_TRUE(torch::allclose(stack.forward(y, nullptr, nullptr).narrow(1, 0, 6),
                              whole.narrow(1, 0, 6), 1e-5, 1e-6));
}

TEST(Model, LstmCarriesState) {
  torch::manual_seed(3);
  LstmStackImpl stack(8, smallOptions("lstm").stack);
  stack.eval();
  torch::NoGradGuard noGrad;
  torch::Tensor x = torch::randn({2, 9, 8});
  StackState mid, end;
  torch::Tensor whole = stack.forward(x, nullptr, nullptr);
  torch::Tensor first = stack.forward(x.narrow(1, 0, 5), nullptr, &mid);
  torch::Tensor second = stack.forward(x.narrow(1, 5, 4), &mid, &end);
  EXPECT_TRUE(torch::allclose(torch::cat({first, second}, 1), whole, 1e-5, 1e-6));
}

TEST(Model, SinusoidalPositionsByHand) {
  torch::Tensor table = sinusoidalPositions(3, 4, torch::TensorOptions());
  // pos 2: sin(2), cos(2), sin(2 / 100), cos(2 / 100)
  EXPECT_NEAR(table[2][0].item<double>(), std::sin(2.0), 1e-6);
  EXPECT_NEAR(table[2][1].item<double>(), std::cos(2.0), 1e-6);
  EXPECT_NEAR(table[2][2].item<double>(), std::sin(0.02), 1e-6);
  EXPECT_NEAR(table[2][3].item<double>(), std::cos(0.02), 1e-6);
}

TEST(Model, ConfigErrorsAreClear) {
  auto config = Config::fromString("[model]\nkind = \"gru\"\n", "m.toml");
  fwp::train::test::expectErrorContaining<fwp::Error>(
      [&] { modelOptionsFromConfig(config, 10, 10); }, "m.toml: model.kind must be");
  auto uneven = Config::fromString("[model]\nlayer = \"delta_net\"\nhidden = 30\nheads = 4\n",
                                   "u.toml");
  fwp::train::test::expectErrorContaining<fwp::Error>(
      [&] { modelOptionsFromConfig(uneven, 10, 10); }, "must be a multiple of model.heads");
  if (!torch::cuda::is_available())
    fwp::train::test::expectErrorContaining<fwp::Error>([] { parseDevice("cuda"); },
                                                        "--device cuda: CUDA is not available");
  fwp::train::test::expectErrorContaining<fwp::Error>([] { parseDevice("tpu"); },
                                                      "expected cpu, cuda");
  ModelOptions artifact = smallOptions("fwp");
  artifact.layer = {"delta_net", "build/delta_net.fwpk"};
  fwp::train::test::expectErrorContaining<fwp::Error>(
      [&] { makeStack(artifact, torch::kCPU); }, "build/delta_net.fwpk");
}

TEST(Model, EveryReferenceLayerRunsInTheStack) {
  for (const auto &name : fwp::referenceLayerNames()) {
    SCOPED_TRACE(name);
    torch::manual_seed(4);
    ModelOptions options = smallOptions("fwp");
    options.stack.layers = 1;
    options.stack.hidden = 8;
    options.stack.heads = 2; // d = 4
    options.layer.name = name;
    options.fastFeedForward = 6;
    TokenModel model(options, torch::kCPU);
    torch::Tensor tokens = torch::randint(1, 20, {2, 6}, torch::kLong);
    torch::Tensor logits = model->forward(tokens);
    ASSERT_EQ(logits.sizes(), torch::IntArrayRef({2, 6, 7}));
    ASSERT_TRUE(torch::isfinite(logits).all().item<bool>());
    logits.pow(2).sum().backward();
    for (const auto &p : model->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      // Vectors that start at 0 can get a zero gradient in the first step
      // (e.g. a LayerNorm bias feeding a sum-normalisation); matrices cannot.
      if (p.value().dim() >= 2 && p.key().find("embedding") == std::string::npos)
        EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    }
    // Two halves with the state carried over equal one pass.
    model->eval();
    torch::NoGradGuard noGrad;
    StackState mid, end;
    torch::Tensor whole = model->forward(tokens);
    torch::Tensor first = model->forward(tokens.narrow(1, 0, 2), nullptr, &mid);
    torch::Tensor second = model->forward(tokens.narrow(1, 2, 4), &mid, &end);
    EXPECT_TRUE(torch::allclose(torch::cat({first, second}, 1), whole, 1e-4, 1e-5));
  }
}
