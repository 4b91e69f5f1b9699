// fwp-train / fwp-eval end to end: a few-step run, evaluation of its
// checkpoint, exit code 2 with "error: ..." for bad input.

#include "TestUtil.h"
#include "ToolUtil.h"

#include "fwp/runtime/CheckpointFile.h"

#include <nlohmann/json.hpp>

#include <csignal>
#include <map>
#include <random>
#include <cstdio>
#include <fstream>
#include <unistd.h>
#include <cstdlib>
#include <sys/wait.h>

using fwp::train::test::TempDir;
using namespace fwp::train::test::tools;

namespace {

std::string tinyConfig(const std::filesystem::path &dir) {
  return "name = \"tiny\"\n"
         "[data]\ntask = \"codeexec\"\ndir = \"" + (dir / "data").string() + "\"\n"
         "statements = 5\ntrain = 64\nvalid = 16\ntest = 16\n"
         "[model]\nkind = \"lstm\"\nlayers = 1\nhidden = 16\nembedding = 8\n"
         "[train]\nsteps = 6\nbatch = 8\nlog_every = 2\neval_every = 3\n"
         "run_dir = \"" + (dir / "run").string() + "\"\n";
}

} // namespace

TEST(Tools, TrainThenEvaluate) {
  TempDir dir("tools_run");
  fwp::train::test::writeText(dir / "tiny.toml", tinyConfig(dir.path()));
  Result train = runTool(std::string(FWP_TRAIN_PATH) + " --config " +
                         (dir / "tiny.toml").string() + " --plain --threads 1");
  ASSERT_EQ(train.code, 0) << train.output;
  EXPECT_NE(train.output.find("generating codeexec data"), std::string::npos) << train.output;
  EXPECT_NE(train.output.find("step 6/6"), std::string::npos) << train.output;
  for (const char *file : {"run/best.pt", "run/last.pt", "run/metrics.jsonl",
                           "run/config.toml", "run/test.json", "data/train.txt"})
    EXPECT_TRUE(std::filesystem::exists(dir / file)) << file;

  Result eval = runTool(std::string(FWP_EVAL_PATH) + " --checkpoint " +
                        (dir / "run/last.pt").string() + " --split valid --json");
  ASSERT_EQ(eval.code, 0) << eval.output;
  auto json = nlohmann::json::parse(eval.output.substr(eval.output.rfind("{\"")));
  EXPECT_EQ(json["split"], "valid");
  EXPECT_GE(json["acc"].get<double>(), 0.0);
  EXPECT_GT(json["loss"].get<double>(), 0.0);
  EXPECT_TRUE(json.contains("print_acc"));

  // Resuming a finished run with more steps continues from step 6 (a
  // changed configuration, so it must be allowed explicitly).
  Result more = runTool(std::string(FWP_TRAIN_PATH) + " --config " +
                        (dir / "tiny.toml").string() +
                        " --plain --resume --steps 8 --allow-config-change");
  ASSERT_EQ(more.code, 0) << more.output;
  EXPECT_NE(more.output.find("at step 6"), std::string::npos) << more.output;
  EXPECT_NE(more.output.find("step 8/8"), std::string::npos) << more.output;
}

TEST(Tools, ErrorsExitWithCode2) {
  TempDir dir("tools_errors");
  fwp::train::test::writeText(dir / "tiny.toml", tinyConfig(dir.path()));
  struct Case {
    std::string command;
    std::string message;
  };
  const std::string train = std::string(FWP_TRAIN_PATH) + " --config " +
                            (dir / "tiny.toml").string() + " --plain";
  std::vector<Case> cases = {
      {train + " --set train.stpes=3", "error: " + (dir / "tiny.toml").string() +
                                           ": unknown key(s) or key(s) this configuration "
                                           "does not use: train.stpes"},
      {train + " --set model.kind=gru", "model.kind must be"},
      {train + " --resume-from " + (dir / "nothing.pt").string(), "does not exist"},
      {std::string(FWP_EVAL_PATH) + " --checkpoint " + (dir / "tiny.toml").string(),
       "not an fwp checkpoint"},
      {train + " --bogus-flag", "--bogus-flag"},
      {std::string(FWP_TRAIN_PATH) + " --plain", "--config is required"},
  };
  if (std::system("nvidia-smi > /dev/null 2>&1") != 0)
    cases.push_back({train + " --device cuda", "error: --device cuda: CUDA is not available"});
  for (const auto &c : cases) {
    SCOPED_TRACE(c.command);
    Result result = runTool(c.command);
    EXPECT_EQ(result.code, 2) << result.output;
    EXPECT_NE(result.output.find(c.message), std::string::npos) << result.output;
  }
  fwp::train::test::writeText(dir / "data" / "train.txt", "x");
  Result gen = runTool(std::string(FWP_TRAIN_PATH) + " gen-data --task listops --out " +
                       (dir / "data").string());
  EXPECT_EQ(gen.code, 2);
  EXPECT_NE(gen.output.find("add --force"), std::string::npos) << gen.output;
}


TEST(Tools, RunsAreNeverLostSilently) {
  TempDir dir("tools_misuse");
  fwp::train::test::writeText(dir / "tiny.toml", tinyConfig(dir.path()));
  const std::string train = std::string(FWP_TRAIN_PATH) + " --config " +
                            (dir / "tiny.toml").string() + " --plain --threads 1";
  ASSERT_EQ(runTool(train).code, 0);
  const std::filesystem::path last = dir / "run" / "last.pt";
  const std::string kept = readBytes(last);

  // Again into the same folder: refused, nothing touched.
  Result again = runTool(train);
  EXPECT_EQ(again.code, 2) << again.output;
  EXPECT_NE(again.output.find("the run folder " + (dir / "run").string() + " holds a run"),
            std::string::npos)
      << again.output;
  EXPECT_EQ(readBytes(last), kept);
  EXPECT_TRUE(std::filesystem::exists(dir / "run" / "best.pt"));

  // A changed configuration on resume: refused with the differences.
  Result changed = runTool(train + " --resume --set train.lr=0.01");
  EXPECT_EQ(changed.code, 2) << changed.output;
  EXPECT_NE(changed.output.find("+ lr = 0.01"), std::string::npos) << changed.output;
  EXPECT_EQ(readBytes(last), kept);

  // A damaged checkpoint: every reader refuses it.
  std::string damaged = kept;
  damaged[damaged.size() / 2] = static_cast<char>(damaged[damaged.size() / 2] ^ 0x10);
  fwp::train::test::writeText(dir / "damaged.pt", damaged);
  for (const std::string &command :
       {train + " --resume-from " + (dir / "damaged.pt").string(),
        std::string(FWP_EVAL_PATH) + " --checkpoint " + (dir / "damaged.pt").string()}) {
    Result result = runTool(command);
    EXPECT_EQ(result.code, 2) << command << "\n" << result.output;
    EXPECT_NE(result.output.find("corrupt"), std::string::npos) << result.output;
  }

  // --overwrite starts over.
  Result over = runTool(train + " --overwrite");
  EXPECT_EQ(over.code, 0) << over.output;
  EXPECT_NE(over.output.find("--overwrite: removed"), std::string::npos) << over.output;

  // A missing split is an error, not a silent regeneration of all three.
  const std::string valid = readBytes(dir / "data" / "valid.txt");
  std::filesystem::remove(dir / "data" / "test.txt");
  Result missing = runTool(train + " --overwrite");
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("test.txt"), std::string::npos) << missing.output;
  EXPECT_EQ(readBytes(dir / "data" / "valid.txt"), valid);
}

TEST(Tools, SigtermAndSigintFinishTheStepAndWriteLastPt) {
  for (int signal : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(signal);
    TempDir dir("tools_signal" + std::to_string(signal));
    std::string config = tinyConfig(dir.path());
    config.replace(config.find("steps = 6"), 9, "steps = 1000000");
    config.replace(config.find("eval_every = 3"), 14, "eval_every = 0");
    fwp::train::test::writeText(dir / "tiny.toml", config);
    ASSERT_EQ(runTool(std::string(FWP_TRAIN_PATH) + " gen-data --config " +
                      (dir / "tiny.toml").string())
                  .code,
              0);
    pid_t pid = spawn(std::string(FWP_TRAIN_PATH) + " --config " + (dir / "tiny.toml").string() +
                          " --plain --threads 1 --set train.checkpoint_every=0",
                      dir / "out.txt");
    // Wait until training runs (the first metrics line), then signal.
    for (int i = 0; i < 600 && !std::filesystem::exists(dir / "run" / "metrics.jsonl"); ++i)
      ::usleep(100000);
    ::usleep(300000);
    ASSERT_EQ(::kill(pid, signal), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    std::string output = readBytes(dir / "out.txt");
    ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal\n" << output;
    EXPECT_EQ(WEXITSTATUS(status), 0) << output;
    EXPECT_NE(output.find("stopped at step"), std::string::npos) << output;
    Result eval = runTool(std::string(FWP_EVAL_PATH) + " --checkpoint " +
                          (dir / "run" / "last.pt").string() + " --split valid --json");
    EXPECT_EQ(eval.code, 0) << eval.output;
  }
}


TEST(Tools, KillNineThenResumeIsBitIdentical) {
  TempDir dir("tools_kill");
  std::string config = tinyConfig(dir.path());
  config.replace(config.find("steps = 6"), 9, "steps = 60");
  config.replace(config.find("eval_every = 3"), 14, "eval_every = 0");
  config += "checkpoint_every = 1\n";
  fwp::train::test::writeText(dir / "tiny.toml", config);
  const std::string train = std::string(FWP_TRAIN_PATH) + " --config " +
                            (dir / "tiny.toml").string() + " --plain --threads 1";
  ASSERT_EQ(runTool(train + " --run-dir " + (dir / "straight").string()).code, 0);
  const auto reference = modelTensors(dir / "straight" / "last.pt");

  std::mt19937 random(13);
  for (int attempt = 0; attempt < 3; ++attempt) {
    SCOPED_TRACE(attempt);
    const std::filesystem::path run = dir / ("killed" + std::to_string(attempt));
    pid_t pid = spawn(train + " --run-dir " + run.string(), dir / "out.txt");
    // Until the first checkpoint exists, then a random moment (checkpoints
    // are written every step, so many kills land inside a write).
    for (int i = 0; i < 600 && !std::filesystem::exists(run / "last.pt"); ++i)
      ::usleep(20000);
    ::usleep(1000 * (random() % 400));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    Result resumed = runTool(train + " --run-dir " + run.string() + " --resume");
    ASSERT_EQ(resumed.code, 0) << resumed.output;
    const auto final = modelTensors(run / "last.pt");
    ASSERT_EQ(final.size(), reference.size());
    for (const auto &[name, tensor] : reference)
      EXPECT_TRUE(torch::equal(final.at(name), tensor)) << name;
    for (const auto &entry : std::filesystem::directory_iterator(run))
      EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos)
          << entry.path();
  }
}
