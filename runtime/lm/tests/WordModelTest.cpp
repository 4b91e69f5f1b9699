// The word model on fwp-train's stacks with the eager reference layers:
// evaluations against brute force, the learning-rate schedule by hand, and
// short training runs (learning, resume) through trainLanguageModel.

#include "TestUtil.h"

#include "fwp/lm/Evaluate.h"
#include "fwp/lm/Run.h"
#include "fwp/lm/WordModel.h"
#include "fwp/train/Config.h"
#include "fwp/train/Training.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

using namespace fwp::lm;
using fwp::lm::testing::TempDir;
using fwp::train::Config;

namespace {

WordModel tinyModel(const std::string &kind, const std::string &layer, bool positions) {
  std::string text = "[model]\nkind = \"" + kind + "\"\n" + (layer.empty() ? "" : "layer = \"" + layer + "\"\n") +
                     "layers = 2\nhidden = 8\nheads = 2\nff_mult = 2\ndropout = 0.0\npos_encoding = " +
                     (positions ? "true" : "false") + "\n[lm]\ncutoffs = [5, 12, 50]\n";
  Config config = Config::fromString(text, "test");
  torch::manual_seed(3);
  WordModel model(wordModelOptionsFromConfig(config, 20), torch::kCPU);
  model->eval();
  return model;
}

torch::Tensor someTokens(int64_t n) {
  torch::manual_seed(9);
  return torch::randint(0, 20, {n}, torch::kInt32);
}

double onePass(WordModelImpl &model, const torch::Tensor &tokens) {
  torch::NoGradGuard g;
  auto all = tokens.to(torch::kInt64);
  int64_t n = all.size(0);
  auto [hidden, state] = model.hidden(all.slice(0, 0, n - 1).unsqueeze(0), {});
  return model.nll(hidden[0], all.slice(0, 1, n)).sum().item<double>();
}

} // namespace

TEST(LearningRate, WarmupThenCosineByHand) {
  // lr 1, warm-up 4, 10 steps: s = step + 1.
  EXPECT_DOUBLE_EQ(learningRate("cosine", 1.0, 0.0, 4, 10, 0), 0.25);
  EXPECT_DOUBLE_EQ(learningRate("cosine", 1.0, 0.0, 4, 10, 2), 0.75);
  EXPECT_NEAR(learningRate("cosine", 1.0, 0.0, 4, 10, 3), 0.5 * (1 + std::cos(M_PI * 0.4)), 1e-12);
  EXPECT_NEAR(learningRate("cosine", 1.0, 0.1, 4, 10, 4), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.5)), 1e-12);
  EXPECT_NEAR(learningRate("cosine", 1.0, 0.0, 4, 10, 9), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(learningRate("constant", 2.0, 0.0, 4, 10, 7), 2.0);
  EXPECT_DOUBLE_EQ(learningRate("cosine", 2.5e-4, 0.0, 0, 10, 0), 2.5e-4 * 0.5 * (1 + std::cos(M_PI * 0.1)));
  EXPECT_THROW(learningRate("linear", 1.0, 0.0, 4, 10, 7), fwp::Error);
}

TEST(WordModel, CarryOverEqualsOneLongPassWithDeltaRnn) {
  auto model = tinyModel("fwp", "delta_rnn", false);
  auto tokens = someTokens(37);
  auto carried = evaluateCarryOver(*model, tokens, 1, 5);
  EXPECT_EQ(carried.tokens, 36);
  const double reference = onePass(*model, tokens);
  EXPECT_NEAR(carried.nllSum, reference, 1e-4 * 36);
  auto reset = evaluateSegments(*model, tokens, 1, 5, /*carryState=*/false);
  EXPECT_GT(std::abs(reset.nllSum - reference), 1e-3); // the state carries information
}

TEST(WordModel, SlidingWindowEqualsPerTokenBruteForceWithRdn) {
  auto model = tinyModel("fwp", "rdn", false);
  auto tokens = someTokens(19);
  const int64_t context = 6;
  auto result = evaluateSlidingWindow(*model, tokens, context, 4);
  ASSERT_EQ(result.tokens, 18);
  double brute = 0;
  {
    torch::NoGradGuard g;
    auto all = tokens.to(torch::kInt64);
    for (int64_t j = 1; j < 19; ++j) {
      int64_t from = std::max<int64_t>(0, j - context);
      auto [hidden, state] = model->hidden(all.slice(0, from, j).unsqueeze(0), {});
      brute += model->nll(hidden[0].slice(0, j - from - 1, j - from), all.slice(0, j, j + 1)).item<double>();
    }
  }
  EXPECT_NEAR(result.nllSum, brute, 1e-4 * 18);
}

TEST(WordModel, TransformerKeepsNoState) {
  auto model = tinyModel("transformer", "", true);
  auto tokens = someTokens(12).to(torch::kInt64).unsqueeze(0);
  torch::NoGradGuard g;
  auto [first, state] = model->hidden(tokens, {});
  for (const auto &layer : state)
    EXPECT_TRUE(layer.empty());
  auto [again, unused] = model->hidden(tokens, state);
  EXPECT_TRUE(torch::allclose(first, again));
  EXPECT_FALSE(model->recurrent());
}

namespace {

/// A corpus that a model can learn: a fixed 7-token cycle with occasional noise.
void writeLearnableCorpus(const TempDir &dir) {
  const char *words[] = {"the", "cat", "sat", "on", "a", "mat", "."};
  auto make = [&](int lines, int seed) {
    std::ostringstream out;
    unsigned state = static_cast<unsigned>(seed);
    for (int l = 0; l < lines; ++l) {
      out << " ";
      for (int i = 0; i < 14; ++i) {
        state = state * 1103515245u + 12345u;
        out << ((state >> 16) % 11 == 0 ? "dog" : words[i % 7]) << " ";
      }
      out << "\n";
    }
    return out.str();
  };
  dir.write("wiki.train.tokens", make(120, 1));
  dir.write("wiki.valid.tokens", make(12, 2));
  dir.write("wiki.test.tokens", make(12, 3));
}

std::string tinyRunConfig(const TempDir &dir, const std::string &runDir, int steps) {
  return "name = \"tiny\"\n[data]\ndir = \"" + dir.path() +
         "\"\n[model]\nkind = \"fwp\"\nlayer = \"delta_net\"\nlayers = 1\nhidden = 16\nheads = 2\nff_mult = 2\n"
         "dropout = 0.0\npos_encoding = true\n[lm]\ncutoffs = [4]\n[train]\ndevice = \"cpu\"\nseed = 4\n"
         "batch = 4\ncontext = 16\nsteps = " +
         std::to_string(steps) +
         "\nlr = 1e-2\nwarmup = 3\nschedule = \"constant\"\nclip = 0.25\nlog_every = 5\neval_every = 10\ncheckpoint_every = 10\n"
         "eval_batch = 2\nrun_dir = \"" +
         runDir + "\"\n[eval]\nmodes = [\"segments\", \"sliding\", \"carry\"]\ncontext = 16\nwindows = 16\n";
}

std::map<std::string, torch::Tensor> checkpointParameters(const std::string &path, const std::string &configPath) {
  Config config = Config::fromFile(configPath);
  WordModel model(wordModelOptionsFromConfig(config, 9), torch::kCPU);
  fwp::train::loadCheckpoint(path, *model, nullptr, torch::kCPU, false);
  std::map<std::string, torch::Tensor> out;
  for (const auto &item : model->named_parameters())
    out[item.key()] = item.value().clone();
  return out;
}

} // namespace

TEST(LmTraining, LearnsAndResumesExactly) {
  TempDir dir;
  writeLearnableCorpus(dir);
  const std::string runA = dir.file("run-a"), runB = dir.file("run-b");
  dir.write("a.toml", tinyRunConfig(dir, runA, 30));
  dir.write("b.toml", tinyRunConfig(dir, runB, 30));
  std::ostringstream log;
  LmTrainRequest request;
  request.configPath = dir.file("a.toml");
  request.interactive = false;
  auto metrics = trainLanguageModel(request, log);
  // Vocabulary: <eos>, 7 words and "dog" = 9 types... plus nothing else.
  // Uniform guessing over 9 words would give ppl 9; the cycle is learnable.
  EXPECT_LT(metrics.at("segments_ppl"), 4.0) << log.str();
  EXPECT_LT(metrics.at("sliding_ppl"), 4.0);
  EXPECT_GT(metrics.at("sliding_tokens"), 150);

  // metrics.jsonl: train lines every 5 steps, validation every 10.
  std::ifstream jsonl(runA + "/metrics.jsonl");
  int trainLines = 0, validLines = 0;
  double firstValid = 0, lastValid = 0;
  for (std::string line; std::getline(jsonl, line);) {
    auto record = nlohmann::json::parse(line);
    if (record["split"] == "train")
      ++trainLines;
    else if (record["split"] == "valid") {
      lastValid = record["ppl"].get<double>();
      if (validLines++ == 0)
        firstValid = lastValid;
    }
  }
  EXPECT_EQ(trainLines, 6);
  EXPECT_EQ(validLines, 3);
  EXPECT_LT(lastValid, firstValid);
  std::ifstream testJson(runA + "/test.json");
  EXPECT_TRUE(testJson.good());

  // Run B stops at step 10 and resumes to 30: the same parameters as run A
  // (the constant schedule does not depend on train.steps).
  LmTrainRequest shortRun;
  shortRun.configPath = dir.file("b.toml");
  shortRun.overrides = {"train.steps=10"};
  shortRun.interactive = false;
  trainLanguageModel(shortRun, log);
  LmTrainRequest resumed;
  resumed.configPath = dir.file("b.toml");
  resumed.resume = true;
  resumed.interactive = false;
  trainLanguageModel(resumed, log);
  EXPECT_NE(log.str().find("resumed from " + runB + "/last.pt at step 10"), std::string::npos) << log.str();
  auto a = checkpointParameters(runA + "/last.pt", dir.file("a.toml"));
  auto b = checkpointParameters(runB + "/last.pt", dir.file("b.toml"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto &[name, tensor] : a)
    EXPECT_TRUE(torch::allclose(tensor, b.at(name), 1e-6, 1e-7)) << name;
}
