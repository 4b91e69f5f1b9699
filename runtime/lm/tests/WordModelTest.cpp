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
#include <functional>
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

std::string tinyRunConfig(const TempDir &dir, const std::string &runDir, int steps, bool carryOver = false) {
  return "name = \"tiny\"\n[data]\ndir = \"" + dir.path() +
         "\"\n[model]\nkind = \"fwp\"\nlayer = \"delta_net\"\nlayers = 1\nhidden = 16\nheads = 2\nff_mult = 2\n"
         "dropout = 0.0\npos_encoding = true\n[lm]\ncutoffs = [4]\n[train]\ndevice = \"cpu\"\nseed = 4\n"
         "batch = 4\ncontext = 16\ncarry_over = " + std::string(carryOver ? "true" : "false") + "\nsteps = " +
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

bool sameParameters(const std::map<std::string, torch::Tensor> &a, const std::map<std::string, torch::Tensor> &b) {
  bool same = a.size() == b.size();
  for (const auto &[name, tensor] : a)
    same = same && b.count(name) && torch::allclose(tensor, b.at(name), 1e-6, 1e-7);
  return same;
}

LmTrainRequest request(const std::string &config, std::vector<std::string> overrides = {}, bool resume = false) {
  LmTrainRequest r;
  r.configPath = config;
  r.overrides = std::move(overrides);
  r.resume = resume;
  // The resumed runs extend train.steps: a configuration change, allowed.
  r.allowConfigChange = resume;
  r.interactive = false;
  return r;
}

/// Trains run A 30 steps straight and run B 10 steps, then resumes B to 30.
/// `betweenRuns` may tamper with B's last.pt before the resume.
void trainStraightAndResumed(const TempDir &dir, bool carryOver, std::ostringstream &log,
                             const std::function<void(const std::string &)> &betweenRuns = {}) {
  dir.write("a.toml", tinyRunConfig(dir, dir.file("run-a"), 30, carryOver));
  dir.write("b.toml", tinyRunConfig(dir, dir.file("run-b"), 30, carryOver));
  trainLanguageModel(request(dir.file("a.toml")), log);
  // The constant schedule does not depend on train.steps, so 10 + 20 steps
  // see the same learning rates as 30.
  trainLanguageModel(request(dir.file("b.toml"), {"train.steps=10"}), log);
  if (betweenRuns)
    betweenRuns(dir.file("run-b") + "/last.pt");
  trainLanguageModel(request(dir.file("b.toml"), {}, /*resume=*/true), log);
}

} // namespace

TEST(LmTraining, LearnsWritesMetricsAndResumesExactly) {
  TempDir dir;
  writeLearnableCorpus(dir);
  std::ostringstream log;
  trainStraightAndResumed(dir, /*carryOver=*/false, log);
  const std::string runA = dir.file("run-a");
  std::ifstream testJson(runA + "/test.json");
  ASSERT_TRUE(testJson.good());
  auto metrics = nlohmann::json::parse(testJson);
  // 9 types (<eos>, 7 words, "dog"): uniform guessing is ppl 9; the cycle is learnable.
  EXPECT_LT(metrics["segments_ppl"].get<double>(), 4.0) << log.str();
  EXPECT_LT(metrics["sliding_ppl"].get<double>(), 4.0);
  EXPECT_GT(metrics["sliding_tokens"].get<double>(), 150);

  // metrics.jsonl: train lines every 5 steps, validation every 10, improving.
  std::ifstream jsonl(runA + "/metrics.jsonl");
  int trainLines = 0, validLines = 0;
  double firstValid = 0, lastValid = 0;
  for (std::string line; std::getline(jsonl, line);) {
    auto record = nlohmann::json::parse(line);
    if (record["split"] == "train") {
      ++trainLines;
    } else if (record["split"] == "valid") {
      lastValid = record["ppl"].get<double>();
      if (validLines++ == 0)
        firstValid = lastValid;
    }
  }
  EXPECT_EQ(trainLines, 6);
  EXPECT_EQ(validLines, 3);
  EXPECT_LT(lastValid, firstValid);

  EXPECT_NE(log.str().find("resumed from " + dir.file("run-b") + "/last.pt at step 10"), std::string::npos)
      << log.str();
  EXPECT_TRUE(sameParameters(checkpointParameters(runA + "/last.pt", dir.file("a.toml")),
                             checkpointParameters(dir.file("run-b") + "/last.pt", dir.file("b.toml"))));
}

TEST(LmTraining, CarryOverResumesWithTheCarriedState) {
  TempDir dir;
  writeLearnableCorpus(dir);
  std::ostringstream log;
  trainStraightAndResumed(dir, /*carryOver=*/true, log, [](const std::string &checkpoint) {
    Config config = Config::fromString(fwp::train::readCheckpointMeta(checkpoint).config, checkpoint);
    WordModel model(wordModelOptionsFromConfig(config, 9), torch::kCPU);
    auto meta = fwp::train::loadCheckpoint(checkpoint, *model, nullptr, torch::kCPU, false);
    ASSERT_TRUE(meta.tensors.count("lm_state.step")) << "no carried state in " << checkpoint;
    EXPECT_EQ(meta.tensors.at("lm_state.step").item<int64_t>(), 9);
    EXPECT_TRUE(meta.tensors.count("lm_state.0.W"));
  });
  auto straight = checkpointParameters(dir.file("run-a") + "/last.pt", dir.file("a.toml"));
  EXPECT_TRUE(sameParameters(straight, checkpointParameters(dir.file("run-b") + "/last.pt", dir.file("b.toml"))));

  // Without the state in last.pt (a checkpoint re-saved without it) the
  // resumed run starts from zeros and ends elsewhere: the state mattered.
  TempDir other;
  writeLearnableCorpus(other);
  trainStraightAndResumed(other, /*carryOver=*/true, log, [](const std::string &checkpoint) {
    Config config = Config::fromString(fwp::train::readCheckpointMeta(checkpoint).config, checkpoint);
    WordModel model(wordModelOptionsFromConfig(config, 9), torch::kCPU);
    auto optimizer = fwp::train::makeAdam(model->parameters(), fwp::train::adamOptionsFromConfig(config));
    auto meta = fwp::train::loadCheckpoint(checkpoint, *model, optimizer.get(), torch::kCPU, true);
    meta.tensors.clear();
    fwp::train::saveCheckpoint(checkpoint, *model, optimizer.get(), meta);
  });
  EXPECT_FALSE(sameParameters(
      checkpointParameters(other.file("run-a") + "/last.pt", other.file("a.toml")),
      checkpointParameters(other.file("run-b") + "/last.pt", other.file("b.toml"))));
}
