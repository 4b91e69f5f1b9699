// fwp-train / fwp-eval end to end: a few-step run, evaluation of its
// checkpoint, exit code 2 with "error: ..." for bad input.

#include "TestUtil.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>

using fwp::train::test::TempDir;

namespace {

struct Result {
  int code;
  std::string output; // stdout and stderr
};

Result runTool(const std::string &command) {
  std::string full = command + " 2>&1";
  std::FILE *pipe = ::popen(full.c_str(), "r");
  Result result{-1, ""};
  if (!pipe)
    return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0)
    result.output.append(buffer, n);
  int status = ::pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

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

  // Resuming a finished run with more steps continues from step 6.
  Result more = runTool(std::string(FWP_TRAIN_PATH) + " --config " +
                        (dir / "tiny.toml").string() + " --plain --resume --steps 8");
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
       "not a readable checkpoint"},
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
