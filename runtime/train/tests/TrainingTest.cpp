// Training loop: a tiny run whose loss must fall, exact resume, checkpoint
// errors, metrics by hand, the epoch sampler.

#include "TestUtil.h"

#include "fwp/train/Experiment.h"
#include "fwp/train/Precision.h"

#include <cstdio>
#include <map>
#include <set>

using namespace fwp::train;
using fwp::train::test::expectErrorContaining;
using fwp::train::test::TempDir;

namespace {

/// kind "lstm", "transformer" or "fwp:<layer>".
ModelOptions tinyOptions(const std::string &kind, const TaskData &task) {
  ModelOptions options;
  options.kind = kind.substr(0, kind.find(':'));
  if (options.kind == "fwp")
    options.layer.name = kind.substr(4);
  options.inputVocab = task.input.size();
  options.classes = task.output.size();
  options.stack.layers = 1;
  options.stack.hidden = 32;
  options.stack.heads = 4;
  options.stack.ffMult = 2;
  options.stack.dropout = 0.1;
  options.embedding = 32;
  options.positionalEncoding = kind == "transformer";
  return options;
}

/// 64 short code-execution programs, generated in memory.
std::vector<SequenceExample> tinyCodeExec(int statements, int count, uint64_t seed) {
  codeexec::GeneratorOptions options;
  options.statements = statements;
  Rng rng(seed);
  std::vector<SequenceExample> data;
  for (int i = 0; i < count; ++i) {
    codeexec::Example example;
    example.tokens = codeexec::generateProgram(options, rng);
    example.targets = codeexec::run(example.tokens, options.vars).targets;
    data.push_back(codeexec::encode(example));
  }
  return data;
}

/// The loss of the best predictor that sees only the current token: the
/// empirical distribution of targets given the input id, on the batch itself.
/// A model below it must be using the context (earlier tokens).
double contextFreeLoss(const Batch &batch) {
  std::map<int64_t, std::map<int64_t, double>> counts;
  auto in = batch.input.accessor<int64_t, 2>();
  auto out = batch.target.accessor<int64_t, 2>();
  double scored = 0;
  for (int64_t b = 0; b < batch.input.size(0); ++b)
    for (int64_t t = 0; t < batch.input.size(1); ++t)
      if (out[b][t] != kIgnore) {
        counts[in[b][t]][out[b][t]] += 1;
        scored += 1;
      }
  double loss = 0;
  for (const auto &[token, targets] : counts) {
    double total = 0;
    for (const auto &[target, n] : targets)
      total += n;
    for (const auto &[target, n] : targets)
      loss -= n * std::log(n / total);
  }
  return loss / scored;
}

} // namespace

namespace {

/// 16 fixed 6-statement programs as one batch, and a 1-layer Delta Net
/// (eager reference, no dropout) drawn from seed 0.
std::pair<Batch, TokenModel> tinyDeltaNetProblem() {
  torch::manual_seed(0);
  TaskData task = describeTask("codeexec");
  auto data = tinyCodeExec(6, 16, 11);
  std::vector<int64_t> all(data.size());
  std::iota(all.begin(), all.end(), 0);
  Batch batch = makeBatch(data, all, torch::kCPU);
  ModelOptions options = tinyOptions("fwp:delta_net", task);
  options.stack.dropout = 0.0;
  return {batch, TokenModel(options, torch::kCPU)};
}

} // namespace

TEST(Training, MetricsByHand) {
  // Two sequences, blank class 0; targets -100 are not scored.
  Batch batch{torch::zeros({2, 3}, torch::kLong),
              torch::tensor(std::vector<int64_t>{0, 4, kIgnore, 0, 2, 0}).view({2, 3})};
  // Predictions (argmax): seq 0 -> 0, 4, (x) all right; seq 1 -> 0, 3, 0: print wrong.
  torch::Tensor logits = torch::full({2, 3, 5}, -10.0);
  logits[0][0][0] = 10; logits[0][1][4] = 10; logits[0][2][1] = 10;
  logits[1][0][0] = 10; logits[1][1][3] = 10; logits[1][2][0] = 10;
  SequenceMetrics metrics(/*blankClass=*/0);
  metrics.add(logits, batch);
  Metrics m = metrics.result();
  EXPECT_DOUBLE_EQ(m.at("acc"), 0.5);       // one of two sequences all right
  EXPECT_DOUBLE_EQ(m.at("print_acc"), 0.5); // targets 4 (right) and 2 (wrong)
  // loss: a right target costs log(1 + 4 e^-20); the wrong one (logit -10
  // against a winner at +10) 20 + log(1 + 4 e^-20).
  double right = std::log1p(4 * std::exp(-20.0));
  double wrong = 20 + right;
  EXPECT_NEAR(m.at("loss"), (4 * right + wrong) / 5, 1e-6);
  EXPECT_NEAR(sequenceLoss(logits, batch).item<double>(), (4 * right + wrong) / 5, 1e-5);

  SequenceMetrics noBlank(-1);
  noBlank.add(logits, batch);
  EXPECT_EQ(noBlank.result().count("print_acc"), 0u);
}

TEST(Training, SamplerIsAPureFunctionOfTheStep) {
  EpochSampler a(10, 3, 5), b(10, 3, 5);
  std::vector<std::vector<int64_t>> sequential;
  for (int64_t s = 0; s < 9; ++s)
    sequential.push_back(a.indices(s));
  for (int64_t s = 8; s >= 0; --s) // any order, fresh object: same batches
    EXPECT_EQ(b.indices(s), sequential[s]);
  // An epoch (3 batches of 3 from 10) never repeats an example.
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> seen;
    for (int k = 0; k < 3; ++k)
      for (int64_t i : sequential[epoch * 3 + k])
        EXPECT_TRUE(seen.insert(i).second);
  }
  EXPECT_NE(sequential[0], sequential[3]) << "epochs are shuffled differently";
}

TEST(Training, MakeBatchPadsAndMasks) {
  std::vector<SequenceExample> data = {{{5, 6, 7}, {-1, -1, 2}}, {{8}, {1}}};
  Batch batch = makeBatch(data, {1, 0}, torch::kCPU);
  EXPECT_TRUE(torch::equal(batch.input, torch::tensor(std::vector<int64_t>{8, 0, 0, 5, 6, 7}).view({2, 3})));
  EXPECT_TRUE(torch::equal(batch.target, torch::tensor(std::vector<int64_t>{1, kIgnore, kIgnore, kIgnore, kIgnore, 2}).view({2, 3})));
}

TEST(Training, TinyRunLossFallsBelowThreshold) {
  // A 1-layer LSTM (hidden 64) on 16 fixed 6-statement programs: the mean cross-entropy
  // starts near ln(26) = 3.26 and within 300 Adam steps must fall below half
  // of what the best context-free predictor achieves on the same batch.
  torch::manual_seed(0);
  TaskData task = describeTask("codeexec");
  auto data = tinyCodeExec(6, 16, 11);
  std::vector<int64_t> all(data.size());
  std::iota(all.begin(), all.end(), 0);
  Batch batch = makeBatch(data, all, torch::kCPU);
  ModelOptions options = tinyOptions("lstm", task);
  options.stack.dropout = 0.0;
  options.stack.hidden = 64;
  TokenModel model(options, torch::kCPU);
  auto optimizer = makeAdam(model->parameters(), AdamOptions{1e-2});
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    optimizer->zero_grad();
    torch::Tensor loss = sequenceLoss(model->forward(batch.input), batch);
    loss.backward();
    optimizer->step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  const double contextFree = contextFreeLoss(batch);
  EXPECT_GT(contextFree, 0.1);
  EXPECT_GT(first, 2.5);
  EXPECT_LT(last, 0.5 * contextFree) << "context-free loss " << contextFree;
}

TEST(Training, TinyDeltaNetRunLossFallsBelowThreshold) {
  // 16 fixed 6-statement programs with a 1-layer Delta Net (eager
  // reference): within 80 Adam steps the loss must fall below half of what
  // the best context-free predictor achieves on the batch.
  auto [batch, model] = tinyDeltaNetProblem();
  auto optimizer = makeAdam(model->parameters(), AdamOptions{1e-2});
  double first = 0, last = 0;
  for (int step = 0; step < 80; ++step) {
    optimizer->zero_grad();
    torch::Tensor loss = sequenceLoss(model->forward(batch.input), batch);
    loss.backward();
    optimizer->step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  const double contextFree = contextFreeLoss(batch);
  EXPECT_GT(contextFree, 0.1);
  EXPECT_GT(first, 2.5);
  EXPECT_LT(last, 0.5 * contextFree) << "context-free loss " << contextFree;
}

namespace {

/// Trains a tiny model for `steps` steps in `dir` (resuming when asked) and
/// returns its parameters.
std::vector<torch::Tensor> trainTiny(const std::string &kind, const std::filesystem::path &dir,
                                     int64_t steps, bool resume, uint64_t initSeed) {
  TaskData task = describeTask("codeexec");
  static const auto data = tinyCodeExec(6, 40, 3);
  torch::manual_seed(initSeed);
  TokenModel model(tinyOptions(kind, task), torch::kCPU);
  auto optimizer = makeAdam(model->parameters(), AdamOptions{});
  LoopOptions options;
  options.steps = steps;
  options.logEvery = 1;
  options.evalEvery = 2;
  options.checkpointEvery = 2;
  options.runDir = dir;
  options.interactive = false;
  TrainingLoop loop(*model, *optimizer, options, "name = \"tiny\"\n");
  if (resume)
    loop.resumeFrom(dir / "last.pt", torch::kCPU);
  EpochSampler sampler(static_cast<int64_t>(data.size()), 8, 9);
  loop.run(
      [&](int64_t s) {
        Batch batch = makeBatch(data, sampler.indices(s), torch::kCPU);
        return StepResult{sequenceLoss(model->forward(batch.input), batch), {}};
      },
      [&] { return evaluateModel(*model, data, 16, torch::kCPU, 0); });
  std::vector<torch::Tensor> params;
  for (const auto &p : model->parameters())
    params.push_back(p.detach().clone());
  return params;
}

} // namespace

TEST(Training, ResumeEqualsAnUninterruptedRun) {
  for (const char *kind : {"lstm", "transformer", "fwp:rdn"}) {
    SCOPED_TRACE(kind);
    std::string tag = std::string(kind).substr(std::string(kind).find(':') + 1);
    TempDir straight("resume_a_" + tag), split("resume_b_" + tag);
    auto reference = trainTiny(kind, straight.path(), 7, false, 1);
    trainTiny(kind, split.path(), 4, false, 1);
    // Different init seed: everything must come from the checkpoint.
    auto resumed = trainTiny(kind, split.path(), 7, true, 99);
    ASSERT_EQ(reference.size(), resumed.size());
    for (size_t i = 0; i < reference.size(); ++i)
      EXPECT_TRUE(torch::equal(reference[i], resumed[i])) << "parameter " << i;
    // The metrics log reads as one run: steps 1..7 once each.
    auto lines = readLines(split.path() / "metrics.jsonl");
    std::vector<int64_t> trainSteps;
    for (const auto &line : lines) {
      auto record = nlohmann::json::parse(line);
      if (record["split"] == "train")
        trainSteps.push_back(record["step"].get<int64_t>());
    }
    EXPECT_EQ(trainSteps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7}));
    // Without a resume the parameters differ (the test can fail).
    auto fresh = trainTiny(kind, split.path(), 3, false, 99);
    EXPECT_FALSE(torch::equal(fresh[0], reference[0]));
  }
}

TEST(Training, CheckpointErrorsNameTheFile) {
  TempDir dir("ckpt_errors");
  TaskData task = describeTask("codeexec");
  TokenModel model(tinyOptions("lstm", task), torch::kCPU);
  CheckpointMeta meta;
  meta.step = 12;
  meta.best = 0.25;
  meta.config = "x = 1\n";
  meta.tensors["carry.h"] = torch::arange(6, torch::kFloat).view({2, 3});
  saveCheckpoint(dir / "a.pt", *model, nullptr, meta);
  for (const auto &entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename(), "a.pt") << "no temporary file may remain";
  CheckpointMeta back = readCheckpointMeta(dir / "a.pt");
  EXPECT_EQ(back.step, 12);
  EXPECT_DOUBLE_EQ(*back.best, 0.25);
  EXPECT_EQ(back.config, "x = 1\n");
  {
    // Parameters and extra tensors come back as saved.
    torch::NoGradGuard noGrad;
    TokenModel copy(tinyOptions("lstm", task), torch::kCPU);
    for (auto &p : copy->parameters())
      p.zero_();
    CheckpointMeta loaded = loadCheckpoint(dir / "a.pt", *copy, nullptr, torch::kCPU, false);
    auto a = model->parameters(), b = copy->parameters();
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(torch::equal(a[i], b[i]));
    ASSERT_EQ(loaded.tensors.count("carry.h"), 1u);
    EXPECT_TRUE(torch::equal(loaded.tensors["carry.h"],
                             torch::arange(6, torch::kFloat).view({2, 3})));
  }

  ModelOptions wider = tinyOptions("lstm", task);
  wider.stack.hidden = 48;
  TokenModel other(wider, torch::kCPU);
  expectErrorContaining<fwp::Error>(
      [&] { loadCheckpoint(dir / "a.pt", *other, nullptr, torch::kCPU, false); },
      "a.pt: tensor 'stack.lstm.weight_ih_l0' has shape [128, 32] in the checkpoint but [192, 32]");
  TokenModel transformer(tinyOptions("transformer", task), torch::kCPU);
  expectErrorContaining<fwp::Error>(
      [&] { loadCheckpoint(dir / "a.pt", *transformer, nullptr, torch::kCPU, false); },
      "a.pt: the checkpoint has no tensor");
  auto optimizer = makeAdam(model->parameters(), AdamOptions{});
  expectErrorContaining<fwp::Error>(
      [&] { loadCheckpoint(dir / "a.pt", *model, optimizer.get(), torch::kCPU, false); },
      "no optimizer state");
  fwp::train::test::writeText(dir / "junk.pt", "not a zip file");
  expectErrorContaining<fwp::Error>([&] { readCheckpointMeta(dir / "junk.pt"); },
                                    "junk.pt: not an fwp checkpoint");
  expectErrorContaining<fwp::Error>([&] { readCheckpointMeta(dir / "none.pt"); },
                                    "none.pt: no such checkpoint");
}

TEST(Training, NonFiniteValuesNeverReachTheParameters) {
  TaskData task = describeTask("codeexec");
  static const auto data = tinyCodeExec(6, 40, 3);
  for (const std::string policy : {"stop", "skip"}) {
    SCOPED_TRACE(policy);
    TempDir dir("nonfinite_" + policy);
    torch::manual_seed(1);
    TokenModel model(tinyOptions("lstm", task), torch::kCPU);
    auto optimizer = makeAdam(model->parameters(), AdamOptions{});
    LoopOptions options;
    options.steps = 5;
    options.logEvery = 1;
    options.evalEvery = 0;
    options.checkpointEvery = 0;
    options.runDir = dir.path();
    options.interactive = false;
    options.onNonFinite = policy;
    TrainingLoop loop(*model, *optimizer, options, "name = \"tiny\"\n");
    EpochSampler sampler(static_cast<int64_t>(data.size()), 8, 9);
    std::vector<torch::Tensor> beforeBadStep;
    auto step = [&](int64_t s) {
      Batch batch = makeBatch(data, sampler.indices(s), torch::kCPU);
      torch::Tensor loss = sequenceLoss(model->forward(batch.input), batch);
      if (s == 2) { // the third step: a NaN in the loss (and so in every gradient)
        for (const auto &p : model->parameters())
          beforeBadStep.push_back(p.detach().clone());
        loss = loss * std::numeric_limits<float>::quiet_NaN();
      }
      return StepResult{loss, {}};
    };
    if (policy == "stop") {
      expectErrorContaining<fwp::Error>([&] { loop.run(step, nullptr); },
                                        "the loss is not finite at step 3");
      // last.pt holds the last good state: the parameters before step 3.
      TokenModel saved(tinyOptions("lstm", task), torch::kCPU);
      CheckpointMeta meta = loadCheckpoint(dir / "last.pt", *saved, nullptr, torch::kCPU, false);
      EXPECT_EQ(meta.step, 2);
      auto params = saved->parameters();
      ASSERT_EQ(params.size(), beforeBadStep.size());
      for (size_t i = 0; i < params.size(); ++i)
        EXPECT_TRUE(torch::equal(params[i], beforeBadStep[i])) << "parameter " << i;
    } else {
      loop.run(step, nullptr);
      EXPECT_EQ(loop.skippedSteps(), 1);
      EXPECT_EQ(loop.step(), 5);
      for (const auto &p : model->parameters())
        EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
      EXPECT_NE(readLines(dir.path() / "metrics.jsonl")[2].find("nonfinite"), std::string::npos);
    }
  }
}

TEST(Training, Bf16RunTrainsAndKeepsFastWeightStatesF32) {
  // train.precision = "bf16": the TrainingLoop runs each step under bf16
  // autocast. The same 16 programs and Delta Net as above: the loss must
  // still fall below half of the context-free predictor's within 80 steps,
  // the projections/head must really run in bf16 (the logits are bf16),
  // and the fast-weight layer's states must stay float32.
  auto [batch, model] = tinyDeltaNetProblem();
  {
    AutocastGuard autocast("bf16", torch::kCPU);
    StackState final;
    torch::NoGradGuard noGrad;
    torch::Tensor logits = model->forward(batch.input, nullptr, &final);
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
    ASSERT_EQ(final.size(), 1u);
    ASSERT_FALSE(final[0].empty());
    for (const auto &[name, state] : final[0])
      EXPECT_EQ(state.scalar_type(), torch::kFloat) << name;
  }
  { // close to the float32 model (bf16 keeps ~3 significant digits)
    torch::NoGradGuard noGrad;
    const double f32 = sequenceLoss(model->forward(batch.input), batch).item<double>();
    AutocastGuard autocast("bf16", torch::kCPU);
    const double bf16 = sequenceLoss(model->forward(batch.input), batch).item<double>();
    EXPECT_NEAR(bf16, f32, 0.05);
  }

  TempDir dir("bf16_run");
  auto optimizer = makeAdam(model->parameters(), AdamOptions{1e-2});
  LoopOptions loopOptions;
  loopOptions.steps = 80;
  loopOptions.evalEvery = 0;
  loopOptions.runDir = dir.path();
  loopOptions.interactive = false;
  loopOptions.logEvery = 80;
  loopOptions.precision = "bf16";
  TrainingLoop loop(*model, *optimizer, loopOptions, "name = \"bf16\"\n");
  double first = 0, last = 0;
  int64_t steps = 0;
  loop.run(
      [&](int64_t) {
        torch::Tensor logits = model->forward(batch.input);
        EXPECT_EQ(logits.scalar_type(), torch::kBFloat16); // autocast is on
        torch::Tensor loss = sequenceLoss(logits, batch);
        (steps++ == 0 ? first : last) = loss.item<double>();
        return StepResult{loss, {}};
      },
      nullptr);
  for (const auto &param : model->parameters())
    EXPECT_EQ(param.scalar_type(), torch::kFloat); // master weights stay f32
  const double contextFree = contextFreeLoss(batch);
  EXPECT_GT(first, 2.5);
  EXPECT_LT(last, 0.5 * contextFree) << "context-free loss " << contextFree;
}
