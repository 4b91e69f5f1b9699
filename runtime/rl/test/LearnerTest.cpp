// The IMPALA learner: the loss on a hand-worked example, gradient flow through
// the memory cores (truncated vs full backprop, resets at episode starts),
// learner updates on CPU for every core, checkpoints, configs, and the
// fwp-atari tool end to end on a real ROM.
#include "fwp/rl/Impala.h"
#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/CheckpointFile.h"
#include "fwp/runtime/Layer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace fwp::rl;

namespace {

// One intra-op thread for every test of this binary: CI has 2 shared cores,
// and OpenMP's spin-waiting makes small multi-threaded ops crawl under load.
const int kSingleThreaded = [] {
  at::set_num_threads(1);
  return 1;
}();

/// A rollout with random frames and actions: [T+1, B].
Rollout syntheticRollout(const ImpalaNet &model, int64_t unroll, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  const int64_t actions = model->config().numActions;
  Rollout r;
  r.frame = torch::randint(0, 256, {unroll + 1, batch, kFrameStack, kFrameSize, kFrameSize},
                           torch::kUInt8);
  r.reward = torch::randint(-3, 4, {unroll + 1, batch}).to(torch::kFloat);
  r.done = torch::rand({unroll + 1, batch}) < 0.2;
  r.lastAction = torch::randint(0, actions, {unroll + 1, batch}, torch::kLong);
  r.action = torch::randint(0, actions, {unroll + 1, batch}, torch::kLong);
  r.policyLogits = torch::randn({unroll + 1, batch, actions});
  r.baseline = torch::randn({unroll + 1, batch});
  r.initialState = model->initialState(batch);
  for (torch::Tensor &s : r.initialState)
    s.normal_(0, 0.1);
  return r;
}

std::string shell(const std::string &command, int *exitCode) {
  std::string output;
  FILE *pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe)
    return output;
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe))
    output += buffer;
  const int status = pclose(pipe);
  *exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return output;
}

std::string readFile(const fs::path &path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool haveRom(const std::string &game) {
  const std::string dir = defaultRomDir();
  return !dir.empty() && fs::is_regular_file(fs::path(dir) / (game + ".bin"));
}

} // namespace

TEST(ImpalaLoss, HandWorkedExample) {
  // T = 1, B = 1, two actions. Learner: uniform policy, V(x0) = .5,
  // bootstrap V(x1) = 1. Batch entry 1: action 1 chosen by a uniform
  // behaviour policy (rho = 1), raw reward 2 (clipped to 1), not done.
  //   vs = r + .99 * 1 = 1.99, advantage = 1.99 - .5 = 1.49
  //   pg = -ln(.5) * 1.49; baseline = .5 * .5 * 1.49^2;
  //   entropy = .01 * 2 * (.5 ln .5) = -.01 ln 2.
  AgentOutput out;
  out.policyLogits = torch::zeros({2, 1, 2});
  out.baseline = torch::tensor({0.5f, 1.0f}).view({2, 1});
  Rollout batch;
  batch.action = torch::tensor({0L, 1L}).view({2, 1});
  batch.policyLogits = torch::zeros({2, 1, 2});
  batch.reward = torch::tensor({0.0f, 2.0f}).view({2, 1});
  batch.done = torch::zeros({2, 1}, torch::kBool);
  TrainConfig config; // discount .99, baseline .5, entropy .01, reward clip 1
  LossTerms loss = impalaLoss(out, batch, config);
  EXPECT_NEAR(loss.policyGradient.item<double>(), std::log(2.0) * 1.49, 1e-5);
  EXPECT_NEAR(loss.baseline.item<double>(), 0.25 * 1.49 * 1.49, 1e-5);
  EXPECT_NEAR(loss.entropy.item<double>(), -0.01 * std::log(2.0), 1e-6);
  EXPECT_NEAR(loss.total.item<double>(),
              std::log(2.0) * 1.49 + 0.25 * 1.49 * 1.49 - 0.01 * std::log(2.0), 1e-5);

  // done after the step: no bootstrap, vs = 1, advantage .5.
  batch.done[1][0] = true;
  loss = impalaLoss(out, batch, config);
  EXPECT_NEAR(loss.policyGradient.item<double>(), std::log(2.0) * 0.5, 1e-5);
  EXPECT_NEAR(loss.baseline.item<double>(), 0.25 * 0.25, 1e-6);
}

class CoreGradient : public ::testing::TestWithParam<std::string> {};

TEST_P(CoreGradient, TruncatedCutsAndFullKeepsGradientsThroughTheState) {
  // Input at t = 0 reaches the output at t = 2 only through the core state.
  for (const std::string mode : {"truncated", "full"}) {
    NetworkConfig config;
    config.core = GetParam();
    config.backprop = mode;
    config.hidden = 16, config.heads = 2, config.headDim = 8, config.ff = 32, config.lstmHidden = 16;
    torch::manual_seed(1);
    auto core = makeMemoryCore(config, 12);
    torch::Tensor input = torch::randn({3, 2, 12}, torch::requires_grad());
    torch::Tensor notDone = torch::ones({3, 2});
    notDone[1][0] = 0; // batch entry 0 starts a new episode at t = 1
    CoreState state = core->initialState(2);
    for (auto &s : state)
      s.uniform_(0, 0.1); // positive: keeps the linear transformer's normaliser away from 0
    const torch::Tensor out = core->forward(input, notDone, state);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 2, core->outputSize()}));
    out[2].sum().backward();
    const double viaStateEntry0 = input.grad()[0][0].abs().sum().item<double>();
    const double viaStateEntry1 = input.grad()[0][1].abs().sum().item<double>();
    const double sameStep = input.grad()[2][1].abs().sum().item<double>();
    EXPECT_GT(sameStep, 0) << mode;
    // The reset at t = 1 cuts entry 0 off from t = 0 in both modes.
    EXPECT_EQ(viaStateEntry0, 0) << mode;
    if (std::string(mode) == "truncated")
      EXPECT_EQ(viaStateEntry1, 0) << mode;
    else
      EXPECT_GT(viaStateEntry1, 0) << mode;
  }
}

INSTANTIATE_TEST_SUITE_P(Cores, CoreGradient,
                         ::testing::Values("lstm", "linear_transformer", "delta_net", "delta_rnn",
                                           "rdn"));

TEST(MemoryCore, StateCarriesAcrossCallsLikeOneLongCall) {
  // Two unrolls of 2 steps with the state carried = one unroll of 4 steps.
  NetworkConfig config;
  config.core = "delta_rnn";
  config.hidden = 16, config.heads = 2, config.headDim = 8, config.ff = 32;
  torch::manual_seed(2);
  auto core = makeMemoryCore(config, 10);
  torch::NoGradGuard noGrad;
  const torch::Tensor input = torch::randn({4, 3, 10});
  const torch::Tensor notDone = torch::ones({4, 3});
  CoreState whole = core->initialState(3), split = core->initialState(3);
  const torch::Tensor all = core->forward(input, notDone, whole);
  const torch::Tensor first = core->forward(input.slice(0, 0, 2), notDone.slice(0, 0, 2), split);
  const torch::Tensor second = core->forward(input.slice(0, 2), notDone.slice(0, 2), split);
  EXPECT_TRUE(torch::allclose(all, torch::cat({first, second}, 0), 1e-5, 1e-6));
  for (size_t i = 0; i < whole.size(); ++i)
    EXPECT_TRUE(torch::allclose(whole[i], split[i], 1e-5, 1e-6)) << "state " << i;
}

/// A core running the compiled layer (fwp-compile --dim d=8) computes what
/// the same core with the eager reference layer computes: outputs, final
/// states and input gradients through an unroll with an episode reset.
class CompiledCore : public ::testing::TestWithParam<std::string> {};

TEST_P(CompiledCore, MatchesTheReferenceCore) {
  const fs::path artifact = fs::path(FWP_TEST_ARTIFACTS) / (GetParam() + "_d8.fwpk");
  if (!fs::exists(artifact))
    GTEST_SKIP() << artifact << " is missing (a build without the compiler)";
  NetworkConfig config;
  config.core = GetParam();
  config.backprop = "full";
  config.hidden = 16, config.heads = 2, config.headDim = 8, config.ff = 32;
  torch::manual_seed(3);
  auto reference = makeMemoryCore(config, 12);
  config.artifact = artifact.string();
  torch::manual_seed(3);
  auto compiled = makeMemoryCore(config, 12);
  const torch::Tensor input = torch::randn({5, 3, 12});
  torch::Tensor notDone = torch::ones({5, 3});
  notDone[2][1] = 0;
  CoreState stateReference = reference->initialState(3), stateCompiled;
  for (auto &s : stateReference)
    s.uniform_(0, 0.1);
  for (const auto &s : stateReference)
    stateCompiled.push_back(s.clone());
  torch::Tensor inputReference = input.clone().requires_grad_(true);
  torch::Tensor inputCompiled = input.clone().requires_grad_(true);
  const torch::Tensor outReference = reference->forward(inputReference, notDone, stateReference);
  const torch::Tensor outCompiled = compiled->forward(inputCompiled, notDone, stateCompiled);
  EXPECT_TRUE(torch::allclose(outCompiled, outReference, 1e-4, 1e-5));
  for (size_t i = 0; i < stateReference.size(); ++i)
    EXPECT_TRUE(torch::allclose(stateCompiled[i], stateReference[i], 1e-4, 1e-5)) << "state " << i;
  const torch::Tensor weights = torch::randn(outReference.sizes());
  (outReference * weights).sum().backward();
  (outCompiled * weights).sum().backward();
  EXPECT_TRUE(torch::allclose(inputCompiled.grad(), inputReference.grad(), 1e-4, 1e-5))
      << (inputCompiled.grad() - inputReference.grad()).abs().max().item<double>();
}

INSTANTIATE_TEST_SUITE_P(Cores, CompiledCore,
                         ::testing::Values("linear_transformer", "delta_net", "delta_rnn", "rdn"));

TEST(CompiledCore, RejectsAnArtifactOfAnotherLayerOrSize) {
  const fs::path artifact = fs::path(FWP_TEST_ARTIFACTS) / "delta_net_d8.fwpk";
  if (!fs::exists(artifact))
    GTEST_SKIP() << artifact << " is missing (a build without the compiler)";
  NetworkConfig config;
  config.hidden = 16, config.heads = 2, config.headDim = 8, config.ff = 32;
  config.artifact = artifact.string();
  config.core = "rdn";
  EXPECT_THROW(makeMemoryCore(config, 12), fwp::Error);
  config.core = "delta_net";
  config.hidden = 32, config.headDim = 16;
  EXPECT_THROW(makeMemoryCore(config, 12), fwp::Error);
}

class LearnerSteps : public ::testing::TestWithParam<std::string> {};

TEST_P(LearnerSteps, UpdatesRunOnCpuAndChangeTheWeights) {
  NetworkConfig net;
  net.core = GetParam();
  net.numActions = 4;
  TrainConfig train;
  train.totalSteps = 1000;
  train.batchSize = 2;
  train.unrollLength = 4;
  torch::manual_seed(5);
  Learner learner(ImpalaNet(net), train);
  std::map<std::string, torch::Tensor> before;
  for (const auto &p : learner.model->named_parameters())
    before[p.key()] = p.value().detach().clone();

  for (int i = 0; i < 3; ++i) {
    const double expectedLr = 6e-4 * (1.0 - i * 8 / 1000.0);
    const LearnerStats stats = learner.update(syntheticRollout(learner.model, 4, 2, 10 + i));
    EXPECT_TRUE(std::isfinite(stats.totalLoss));
    EXPECT_TRUE(std::isfinite(stats.gradNorm));
    EXPECT_GT(stats.gradNorm, 0);
    EXPECT_NEAR(stats.learningRate, expectedLr, 1e-12);
  }
  EXPECT_EQ(learner.stepsDone, 3 * 4 * 2);
  EXPECT_EQ(learner.updates, 3);
  int changed = 0, coreChanged = 0, coreParams = 0;
  for (const auto &p : learner.model->named_parameters()) {
    const bool moved = !torch::equal(before.at(p.key()), p.value());
    changed += moved;
    if (p.key().rfind("core.", 0) == 0) {
      ++coreParams;
      coreChanged += moved;
    }
  }
  EXPECT_GT(changed, 10);
  if (GetParam() != "none") {
    EXPECT_GT(coreParams, 0);
    EXPECT_EQ(coreChanged, coreParams) << "every core parameter should receive gradient";
  }
}

INSTANTIATE_TEST_SUITE_P(Cores, LearnerSteps,
                         ::testing::Values("lstm", "linear_transformer", "delta_net", "delta_rnn",
                                           "rdn", "none"));

TEST(Learner, GradientNormIsClipped) {
  // A huge reward scale without clipping makes the raw gradient norm exceed
  // the threshold; the applied update must then equal lr-scaled clipped
  // gradients, so compare parameter movement between clip 1e-3 and clip 1e9.
  NetworkConfig net;
  net.core = "none";
  net.numActions = 3;
  auto movement = [&](double clip) {
    TrainConfig train;
    train.batchSize = 1, train.unrollLength = 3, train.totalSteps = 1000000;
    train.gradNormClip = clip;
    train.rewardClip = 0;
    torch::manual_seed(9);
    Learner learner(ImpalaNet(net), train);
    Rollout r = syntheticRollout(learner.model, 3, 1, 4);
    r.reward *= 1000;
    const torch::Tensor before = learner.model->named_parameters()["policy.weight"].clone();
    const LearnerStats stats = learner.update(r);
    EXPECT_GT(stats.gradNorm, 1.0);
    return (learner.model->named_parameters()["policy.weight"] - before).abs().max().item<double>();
  };
  // RMSprop's first step is lr * g / (sqrt(.01 g^2) + eps): with clipping the
  // gradient entries are tiny relative to eps, so the step is far smaller.
  EXPECT_LT(movement(1e-3) * 20, movement(1e9));
}

TEST(Checkpoint, RoundTripRestoresWeightsOptimizerAndCounters) {
  const fs::path dir = fs::path(FWP_RL_TEST_TMPDIR) / "checkpoint";
  fs::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();
  ImpalaConfig config;
  config.model.core = "rdn";
  config.model.numActions = 4;
  config.train.batchSize = 2, config.train.unrollLength = 3;
  torch::manual_seed(1);
  Learner learner(ImpalaNet(config.model), config.train);
  learner.update(syntheticRollout(learner.model, 3, 2, 1));
  learner.episodes = 7;
  saveCheckpoint(path, config, learner, "");
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  torch::manual_seed(2);
  Learner restored(ImpalaNet(config.model), config.train);
  loadCheckpoint(path, restored);
  EXPECT_EQ(restored.stepsDone, learner.stepsDone);
  EXPECT_EQ(restored.updates, 1);
  EXPECT_EQ(restored.episodes, 7);
  auto a = learner.model->named_parameters(), b = restored.model->named_parameters();
  for (const auto &p : a)
    EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  // Same next update from both (optimizer state restored too).
  const Rollout next = syntheticRollout(learner.model, 3, 2, 3);
  learner.update(next);
  restored.update(next);
  b = restored.model->named_parameters();
  for (const auto &p : learner.model->named_parameters())
    EXPECT_TRUE(torch::allclose(p.value(), b[p.key()], 1e-6, 1e-7)) << p.key();

  EXPECT_EQ(configToToml(readCheckpointConfig(path)), configToToml(config));
  // A different model does not load.
  ImpalaConfig other = config;
  other.model.core = "lstm";
  Learner wrong(ImpalaNet(other.model), other.train);
  EXPECT_THROW(loadCheckpoint(path, wrong), fwp::Error);
  EXPECT_THROW(loadCheckpoint((dir / "missing.pt").string(), wrong), fwp::Error);
}

TEST(Config, ParsesOverridesAndRejectsUnknownKeys) {
  const ImpalaConfig c = parseConfig(R"([env]
game = "breakout"
[model]
core = "delta_net"
[train]
learning_rate = 1e-3
batch_size = 8
)",
                                     "inline");
  EXPECT_EQ(c.env.game, "breakout");
  EXPECT_EQ(c.env.noopMax, 30);
  EXPECT_EQ(c.model.core, "delta_net");
  EXPECT_EQ(c.model.resolvedBackprop(), "truncated");
  EXPECT_DOUBLE_EQ(c.train.learningRate, 1e-3);
  EXPECT_EQ(c.train.batchSize, 8);
  EXPECT_EQ(c.train.unrollLength, 50);
  EXPECT_EQ(configToToml(parseConfig(configToToml(c), "round trip")), configToToml(c));

  const ImpalaConfig o =
      applyOverrides(c, {"train.actors=3", "model.backprop=\"full\"", "env.game=pong"});
  EXPECT_EQ(o.train.actors, 3);
  EXPECT_EQ(o.model.resolvedBackprop(), "full");
  EXPECT_EQ(o.env.game, "pong");
  EXPECT_THROW(applyOverrides(c, {"train.actors=\"many\""}), fwp::Error);
  EXPECT_THROW(applyOverrides(c, {"nosection.x=1"}), fwp::Error);

  auto errorOf = [](const std::string &text) {
    try {
      parseConfig(text, "cfg.toml");
    } catch (const fwp::Error &e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(errorOf("[train]\nlearning_rat = 1.0\n").find("unknown key train.learning_rat"),
            std::string::npos);
  EXPECT_NE(errorOf("[model]\ncore = \"gru\"\n").find("unknown core 'gru'"), std::string::npos);
  EXPECT_NE(errorOf("[train]\nbatch_size = \"x\"\n").find("train.batch_size must be an integer"),
            std::string::npos);
  EXPECT_NE(errorOf("[train\n").find("cfg.toml:"), std::string::npos);
}

TEST(Config, ShippedAtariConfigsParse) {
  int count = 0;
  for (const std::string core : {"lstm", "linear_transformer", "delta_net", "delta_rnn", "rdn"}) {
    const ImpalaConfig c =
        loadConfig(std::string(FWP_CONFIG_DIR) + "/atari_" + core + ".toml");
    EXPECT_EQ(c.model.core, core);
    EXPECT_EQ(c.train.batchSize, 32);
    EXPECT_EQ(c.train.unrollLength, 50);
    EXPECT_DOUBLE_EQ(c.train.learningRate, 6e-4);
    ++count;
  }
  for (const std::string core : {"lstm", "delta_net"}) {
    const ImpalaConfig c =
        loadConfig(std::string(FWP_CONFIG_DIR) + "/atari_cpu_breakout_" + core + ".toml");
    EXPECT_EQ(c.env.game, "breakout");
    EXPECT_EQ(c.model.core, core);
    ++count;
  }
  EXPECT_EQ(count, 7);
}

TEST(FwpAtari, TrainsResumesAndTestsOnARealRom) {
  if (!haveRom("breakout"))
    GTEST_SKIP() << "ALE ROM 'breakout' not found in '" << defaultRomDir()
                 << "' (run scripts/setup_ale.sh)";
  const fs::path dir = fs::path(FWP_RL_TEST_TMPDIR) / "fwp-atari";
  fs::create_directories(dir);
  fs::remove(dir / "run" / "checkpoint.pt");
  fs::remove(dir / "run" / "metrics.jsonl");
  fs::remove(dir / "run" / "episodes.jsonl");
  {
    std::ofstream cfg(dir / "tiny.toml");
    cfg << "[env]\ngame = \"breakout\"\n[model]\ncore = \"delta_net\"\n"
        << "[train]\ntotal_steps = 20\nbatch_size = 2\nunroll_length = 5\nactors = 1\n"
        << "envs_per_actor = 2\nlog_every_s = 0\n";
  }
  const std::string exe = FWP_ATARI_PATH;
  const std::string run = (dir / "run").string();
  int code = 0;
  std::string out = shell(exe + " train --config " + (dir / "tiny.toml").string() +
                              " --run-dir " + run,
                          &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("frames/s"), std::string::npos) << out;
  ASSERT_TRUE(fs::exists(dir / "run" / "checkpoint.pt")) << out;
  EXPECT_TRUE(fs::exists(dir / "run" / "config.toml"));
  const std::string metrics = readFile(dir / "run" / "metrics.jsonl");
  EXPECT_NE(metrics.find("\"steps\":20"), std::string::npos) << metrics;

  // The same command again: the folder holds a run, nothing is touched.
  out = shell(exe + " train --config " + (dir / "tiny.toml").string() + " --run-dir " + run,
              &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("holds a run"), std::string::npos) << out;

  // Resume: the learner continues from step 20 (a longer run is a config
  // change).
  out = shell(exe + " train --config " + (dir / "tiny.toml").string() + " --run-dir " + run +
                  " --resume --allow-config-change --set train.total_steps=40",
              &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("resuming"), std::string::npos) << out;
  EXPECT_NE(readFile(dir / "run" / "metrics.jsonl").find("\"steps\":40"), std::string::npos);
  // The resumed run's log has no duplicate steps (cut back to the checkpoint).
  {
    std::istringstream lines(readFile(dir / "run" / "metrics.jsonl"));
    int64_t previous = -1;
    for (std::string line; std::getline(lines, line);) {
      const int64_t steps = nlohmann::json::parse(line)["steps"].get<int64_t>();
      EXPECT_GT(steps, previous) << line;
      previous = steps;
    }
  }

  // Another model in the same run dir is refused, naming the difference.
  out = shell(exe + " train --config " + (dir / "tiny.toml").string() + " --run-dir " + run +
                  " --resume --set train.total_steps=40 --set model.core=\\\"lstm\\\"",
              &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("+ core = \"lstm\""), std::string::npos) << out;

  // Test mode: one full game, JSON written.
  const std::string json = (dir / "test.json").string();
  out = shell(exe + " test --checkpoint " + run + "/checkpoint.pt --episodes 1 --out " + json,
              &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("episode 1/1: score"), std::string::npos) << out;
  EXPECT_NE(out.find("mean score"), std::string::npos) << out;
  EXPECT_NE(readFile(json).find("\"mean_score\""), std::string::npos);

  out = shell(exe + " test --checkpoint " + (dir / "missing.pt").string(), &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("no such checkpoint"), std::string::npos) << out;
}

TEST(FwpAtari, SigtermFinishesTheUpdateAndWritesTheCheckpoint) {
  if (!haveRom("breakout"))
    GTEST_SKIP() << "ALE ROM 'breakout' not found in '" << defaultRomDir()
                 << "' (run scripts/setup_ale.sh)";
  const fs::path dir = fs::path(FWP_RL_TEST_TMPDIR) / "fwp-atari-signal";
  // Not fs::remove_all: the LibTorch wheel's copy crashes on non-empty folders.
  ASSERT_EQ(std::system(("rm -rf '" + dir.string() + "'").c_str()), 0);
  fs::create_directories(dir);
  {
    std::ofstream cfg(dir / "tiny.toml");
    cfg << "[env]\ngame = \"breakout\"\n[model]\ncore = \"lstm\"\n"
        << "[train]\ntotal_steps = 100000000\nbatch_size = 2\nunroll_length = 5\nactors = 1\n"
        << "envs_per_actor = 2\nlog_every_s = 0\n";
  }
  const std::string command = "exec " + std::string(FWP_ATARI_PATH) + " train --config " +
                              (dir / "tiny.toml").string() + " --run-dir " +
                              (dir / "run").string() + " > " + (dir / "out.txt").string() + " 2>&1";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 600 && !fs::exists(dir / "run" / "metrics.jsonl"); ++i)
    usleep(100000);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string out = readFile(dir / "out.txt");
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal\n" << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_TRUE(fs::exists(dir / "run" / "checkpoint.pt")) << out;
  EXPECT_NE(out.find("wrote"), std::string::npos) << out;
}

/// fwp-train's run-folder rule, through fwp-atari, without a ROM: env.rom_dir
/// names a missing folder, so a start that passes the checks fails on the ROM
/// instead of training (the checks come first and touch nothing).
class FwpAtariRunFolder : public ::testing::Test {
protected:
  void SetUp() override {
    dir = fs::path(FWP_RL_TEST_TMPDIR) /
          ("run-folder-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    // Not fs::remove_all: the LibTorch wheel's copy crashes on non-empty folders.
    ASSERT_EQ(std::system(("rm -rf '" + dir.string() + "'").c_str()), 0);
    fs::create_directories(dir / "run");
  }

  /// Writes the config and a checkpoint of it (plus a metrics line) into run/.
  void writeRun(const std::string &model) {
    config = "[env]\ngame = \"breakout\"\nrom_dir = \"" + (dir / "no-roms").string() +
             "\"\n[model]\n" + model +
             "[train]\ntotal_steps = 40\nbatch_size = 2\nunroll_length = 5\nactors = 1\n"
             "envs_per_actor = 2\n";
    std::ofstream(dir / "tiny.toml") << config;
    ImpalaConfig parsed = parseConfig(config, "tiny.toml");
    parsed.model.numActions = 4; // breakout's, as training sets it
    torch::manual_seed(1);
    Learner learner(ImpalaNet(parsed.model), parsed.train);
    saveCheckpoint((dir / "run" / "checkpoint.pt").string(), parsed, learner,
                   artifactDigestOf(parsed));
    std::ofstream(dir / "run" / "metrics.jsonl") << "{\"steps\":20}\n";
    checkpointBytes = readFile(dir / "run" / "checkpoint.pt");
  }

  std::string train(const std::string &flags, int *code) {
    return shell(std::string(FWP_ATARI_PATH) + " train --config " + (dir / "tiny.toml").string() +
                     " --run-dir " + (dir / "run").string() + " " + flags,
                 code);
  }

  /// The run's files are as writeRun() left them.
  void expectUntouched(const std::string &out) {
    EXPECT_EQ(readFile(dir / "run" / "checkpoint.pt"), checkpointBytes) << out;
    EXPECT_EQ(readFile(dir / "run" / "metrics.jsonl"), "{\"steps\":20}\n") << out;
  }

  static bool failedOnTheRom(const std::string &out) {
    return out.find("ROM directory") != std::string::npos &&
           out.find("does not exist") != std::string::npos;
  }

  fs::path dir;
  std::string config, checkpointBytes;
};

TEST_F(FwpAtariRunFolder, AFolderHoldingARunNeedsResumeOrOverwrite) {
  writeRun("core = \"lstm\"\nlstm_hidden = 16\n");
  int code = 0;
  std::string out = train("", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("error: the run folder " + (dir / "run").string() +
                     " holds a run (checkpoint.pt, metrics.jsonl)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("--resume"), std::string::npos) << out;
  EXPECT_FALSE(failedOnTheRom(out)) << out;
  expectUntouched(out);

  // --overwrite (and its alias --fresh) pass the rule; the ROM is checked
  // before anything is removed, so a start that fails removes nothing.
  for (const char *flag : {"--overwrite", "--fresh"}) {
    out = train(flag, &code);
    EXPECT_EQ(code, 2) << out;
    EXPECT_TRUE(failedOnTheRom(out)) << out;
    EXPECT_EQ(out.find("holds a run"), std::string::npos) << out;
    expectUntouched(out);
  }

  // --resume with the stored configuration passes the check (num_actions,
  // set from the game, is not a difference).
  out = train("--resume", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_TRUE(failedOnTheRom(out)) << out;
  EXPECT_EQ(out.find("differs"), std::string::npos) << out;
  expectUntouched(out);

  // --resume and --overwrite exclude each other.
  out = train("--resume --overwrite", &code);
  EXPECT_NE(code, 0) << out;
  expectUntouched(out);

  // --resume in a folder without a checkpoint.
  fs::remove(dir / "run" / "checkpoint.pt");
  out = train("--resume", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("--resume: " + (dir / "run" / "checkpoint.pt").string() + " does not exist"),
            std::string::npos)
      << out;
}

TEST_F(FwpAtariRunFolder, ResumeRefusesAnotherConfigurationPrintingTheDifferences) {
  writeRun("core = \"lstm\"\nlstm_hidden = 16\n");
  int code = 0;
  std::string out = train("--resume --set train.learning_rate=0.001 --set env.noop_max=7", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("differs from the one " + (dir / "run" / "checkpoint.pt").string()),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("  + learning_rate = 0.001\n"), std::string::npos) << out;
  EXPECT_NE(out.find("  - learning_rate = 0.0005"), std::string::npos) << out;
  EXPECT_NE(out.find("  - noop_max = 30\n"), std::string::npos) << out;
  EXPECT_NE(out.find("  + noop_max = 7\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("core"), std::string::npos) << "only differences are printed\n" << out;
  EXPECT_NE(out.find("--allow-config-change"), std::string::npos) << out;
  EXPECT_FALSE(failedOnTheRom(out)) << out;
  expectUntouched(out);

  // Told so, the resume goes on (here to the missing ROM) and says what changed.
  out = train("--resume --allow-config-change --set train.learning_rate=0.001", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("note: --allow-config-change"), std::string::npos) << out;
  EXPECT_NE(out.find("  + learning_rate = 0.001\n"), std::string::npos) << out;
  EXPECT_TRUE(failedOnTheRom(out)) << out;
  expectUntouched(out);
}

TEST_F(FwpAtariRunFolder, CheckpointsRecordTheArtifactDigestAndResumeComparesIt) {
  const fs::path artifact = fs::path(FWP_TEST_ARTIFACTS) / "delta_net_d8.fwpk";
  const fs::path other = fs::path(FWP_TEST_ARTIFACTS) / "rdn_d8.fwpk";
  if (!fs::exists(artifact) || !fs::exists(other))
    GTEST_SKIP() << artifact << " or " << other << " is missing (a build without the compiler)";
  const fs::path layer = dir / "layer.fwpk";
  fs::copy_file(artifact, layer);
  writeRun("core = \"delta_net\"\nhidden = 16\nheads = 2\nhead_dim = 8\nff = 32\nartifact = \"" +
           layer.string() + "\"\n");
  const fwp::CheckpointHeader header =
      fwp::readCheckpointFile((dir / "run" / "checkpoint.pt").string()).header;
  EXPECT_EQ(header.trainer, "fwp-atari");
  EXPECT_EQ(header.artifactDigest, fwp::artifactDigest(artifact.string()));
  EXPECT_EQ(header.artifactDigest.size(), 64u);
  EXPECT_NE(header.artifactDigest, fwp::artifactDigest(other.string()));

  int code = 0;
  std::string out = train("--resume", &code);
  EXPECT_TRUE(failedOnTheRom(out)) << "the same layer resumes\n" << out;

  // The same path now holds another compiled layer: refused, both digests named.
  fs::remove(layer);
  fs::copy_file(other, layer);
  out = train("--resume", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("  - artifact sha256 " + header.artifactDigest), std::string::npos) << out;
  EXPECT_NE(out.find("  + artifact sha256 " + fwp::artifactDigest(other.string())),
            std::string::npos)
      << out;
  EXPECT_FALSE(failedOnTheRom(out)) << out;
  expectUntouched(out);
}
