// fwp-lm train on two CPU processes (Gloo on 127.0.0.1) against one process
// with the same global batch; the carried-over state stays per rank and a
// checkpoint moves between process counts.

#include "TestUtil.h"
#include "ToolUtil.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <random>

using namespace fwp::train::test::tools;

namespace {

/// A corpus of random words from a 40-word vocabulary with some structure
/// (each word tends to follow its predecessor + 1).
void writeCorpus(const fwp::lm::testing::TempDir &dir) {
  std::mt19937 random(5);
  for (const auto &[split, lines] : {std::pair<std::string, int>{"train", 200}, {"valid", 20}, {"test", 20}}) {
    std::string text;
    int word = 0;
    for (int line = 0; line < lines; ++line) {
      for (int i = 0; i < 10; ++i) {
        word = random() % 4 == 0 ? static_cast<int>(random() % 40) : (word + 1) % 40;
        text += " w" + std::to_string(word);
      }
      text += "\n";
    }
    dir.write("wiki." + split + ".tokens", text);
  }
}

std::string config(const fwp::lm::testing::TempDir &dir) {
  return "name = \"lm_dp\"\n"
         "[data]\ntask = \"wikitext\"\ndir = \"" + dir.path() + "\"\n"
         "[model]\nkind = \"fwp\"\nlayer = \"delta_net\"\nreference = true\n"
         "layers = 1\nhidden = 16\nheads = 2\nff_mult = 2\ndropout = 0.0\n"
         "[lm]\ncutoffs = []\n"
         "[train]\nsteps = 4\nbatch = 8\ncontext = 8\ncarry_over = true\nwarmup = 0\n"
         "schedule = \"constant\"\nlr = 0.003\nlog_every = 1\neval_every = 2\n"
         "checkpoint_every = 2\neval_batch = 4\neval_segments = 3\n"
         "[eval]\nmodes = [\"segments\"]\nmax_tokens = 200\n";
}

struct Fixture {
  fwp::lm::testing::TempDir dir;
  std::string train;
  Fixture() {
    writeCorpus(dir);
    dir.write("lm.toml", config(dir));
    train = std::string(FWP_LM_PATH) + " --threads 1 train --config " + dir.file("lm.toml") +
            " --no-progress-bar --dist-timeout 60";
  }
  Result run(const std::string &run, const std::string &arguments) {
    Result result = runTool(train + " --set train.run_dir=" + dir.file(run) + " " + arguments);
    EXPECT_EQ(result.code, 0) << result.output;
    return result;
  }
};

} // namespace

TEST(LmDataParallel, TwoProcessesEqualOneWithTheGlobalBatch) {
  Fixture f;
  f.run("one", "--set train.batch=8");
  Result two = f.run("two", "--set train.batch=4 --nproc 2");
  EXPECT_NE(two.output.find("4 rows x 2 processes (gloo) x 1 micro-batches = 8 rows"), std::string::npos)
      << two.output;
  expectSameRun(f.dir.file("one"), f.dir.file("two"));
  // Accumulation too: 2 processes x 2 micro-batches x 2 rows.
  f.run("acc", "--set train.batch=2 --set train.accumulate=2 --nproc 2");
  expectSameRun(f.dir.file("one"), f.dir.file("acc"));
  // The comparison can fail: without the carried state the losses differ.
  f.run("nocarry", "--set train.batch=8 --set train.carry_over=false");
  EXPECT_GT(std::abs(metricsRecords(f.dir.file("nocarry"), "train").at(3)["loss"].get<double>() -
                     metricsRecords(f.dir.file("one"), "train").at(3)["loss"].get<double>()),
            1e-5);
}

TEST(LmDataParallel, ResumeAcrossProcessCounts) {
  Fixture f;
  f.run("one", "--set train.batch=8");
  // Steps 1-2 on two processes, 3-4 on one: the carried state of all 8 rows
  // moves through the checkpoint.
  f.run("a", "--set train.batch=4 --nproc 2 --set train.steps=2");
  f.run("a", "--set train.batch=8 --resume --allow-config-change");
  expectSameRun(f.dir.file("one"), f.dir.file("a"));
  f.run("b", "--set train.batch=8 --set train.steps=2");
  f.run("b", "--set train.batch=4 --nproc 2 --resume --allow-config-change");
  expectSameRun(f.dir.file("one"), f.dir.file("b"));
  // Another global batch: it works and says that the state starts anew.
  Result c = f.run("b", "--set train.batch=2 --nproc 2 --set train.steps=6 --resume --allow-config-change");
  EXPECT_NE(c.output.find("note: the checkpoint carries the state of 8 rows, this run has 4"), std::string::npos)
      << c.output;
}
