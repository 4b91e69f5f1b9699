// fwp-lm end to end as a process: SIGTERM and SIGINT finish the current
// training step, write last.pt (atomically: no temporary file is left) and
// exit with code 0; --resume continues from it to the end with a metrics log
// free of duplicate steps; a second signal exits at once. And `fwp-lm
// prepare` killed at random moments leaves no cache that is later trusted.

#include "TestUtil.h"

#include "fwp/lm/Corpus.h"
#include "fwp/runtime/CheckpointFile.h"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

using fwp::lm::testing::TempDir;

namespace {

std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A small corpus of words drawn by a linear congruential generator.
void writeCorpus(const TempDir &dir) {
  const char *words[] = {"the", "cat", "sat", "on", "a", "mat", ".", "dog", "ran"};
  uint32_t state = 7;
  auto make = [&](int lines) {
    std::ostringstream out;
    for (int line = 0; line < lines; ++line) {
      for (int i = 0; i < 12; ++i) {
        state = state * 1103515245u + 12345u;
        out << " " << words[(state >> 16) % 9];
      }
      out << "\n";
    }
    return out.str();
  };
  dir.write("wiki.train.tokens", make(200));
  dir.write("wiki.valid.tokens", make(10));
  dir.write("wiki.test.tokens", make(10));
}

/// Steps enough that a run is still training when signalled; no validation
/// or periodic checkpoint, so last.pt can only come from the signal.
std::string longRunConfig(const TempDir &dir, int64_t steps) {
  return "name = \"tiny\"\n[data]\ndir = \"" + dir.path() +
         "\"\n[model]\nkind = \"fwp\"\nlayer = \"delta_net\"\nlayers = 1\nhidden = 16\nheads = 2\n"
         "ff_mult = 2\ndropout = 0.0\n[lm]\ncutoffs = [4]\n[train]\ndevice = \"cpu\"\nseed = 4\n"
         "batch = 4\ncontext = 16\nsteps = " +
         std::to_string(steps) +
         "\nlr = 1e-2\nwarmup = 3\nschedule = \"constant\"\nlog_every = 1\neval_every = 0\n"
         "checkpoint_every = 0\nrun_dir = \"" +
         dir.file("run") + "\"\n[eval]\nmodes = [\"segments\"]\ncontext = 16\nsegment_batch = 2\nmax_tokens = 40\n";
}

/// Starts `command` (through sh -c exec) with its output in `output`.
pid_t spawn(const std::string &command, const std::string &output) {
  pid_t pid = ::fork();
  if (pid == 0) {
    const std::string full = "exec " + command + " > " + output + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char *>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int run(const std::string &command, std::string &output) {
  std::FILE *pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe)
    return -1;
  char buffer[4096];
  size_t n;
  output.clear();
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0)
    output.append(buffer, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// The train steps logged in metrics.jsonl, in order.
std::vector<int64_t> trainSteps(const std::string &path) {
  std::vector<int64_t> steps;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object() && record.value("split", "") == "train")
      steps.push_back(record.at("step").get<int64_t>()); // (a line being written is skipped)
  }
  return steps;
}

/// Starts training, waits until it has logged a few steps, returns its pid.
pid_t startTraining(const TempDir &dir, const std::string &command) {
  const pid_t pid = spawn(command, dir.file("out.txt"));
  const std::string metrics = dir.file("run/metrics.jsonl");
  for (int i = 0; i < 1200 && trainSteps(metrics).size() < 3; ++i)
    ::usleep(50000);
  return pid;
}

/// The names in `folder` (none if it cannot be read).
std::vector<std::string> folderEntries(const std::string &folder) {
  std::vector<std::string> names;
  if (DIR *handle = ::opendir(folder.c_str())) {
    while (const dirent *entry = ::readdir(handle))
      if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..")
        names.push_back(entry->d_name);
    ::closedir(handle);
  }
  return names;
}

} // namespace

TEST(Tools, LmTrainSigtermAndSigintFinishTheStepWriteLastPtAndResume) {
  for (int signal : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(signal == SIGTERM ? "SIGTERM" : "SIGINT");
    TempDir dir;
    writeCorpus(dir);
    dir.write("long.toml", longRunConfig(dir, 1000000));
    const std::string train = std::string(FWP_LM_PATH) + " --threads 1 train --no-progress-bar --config " +
                              dir.file("long.toml");
    const pid_t pid = startTraining(dir, train);
    ASSERT_FALSE(trainSteps(dir.file("run/metrics.jsonl")).empty()) << readText(dir.file("out.txt"));
    ASSERT_EQ(::kill(pid, signal), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    const std::string output = readText(dir.file("out.txt"));
    ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal\n" << output;
    EXPECT_EQ(WEXITSTATUS(status), 0) << output;
    EXPECT_NE(output.find("stopped at step"), std::string::npos) << output;

    // last.pt holds the last finished step: the one the log ends with.
    const std::vector<int64_t> logged = trainSteps(dir.file("run/metrics.jsonl"));
    ASSERT_FALSE(logged.empty());
    const fwp::CheckpointFile last = fwp::readCheckpointFile(dir.file("run/last.pt"));
    EXPECT_EQ(last.header.trainer, "fwp-lm");
    EXPECT_EQ(last.header.step, logged.back()) << output;
    EXPECT_GT(last.header.step, 0);
    // Written atomically: nothing but the run's files is left in the folder.
    for (const std::string &name : folderEntries(dir.file("run")))
      EXPECT_TRUE(name == "last.pt" || name == "metrics.jsonl" || name == "config.toml") << name;
    EXPECT_FALSE(std::filesystem::exists(dir.file("run/test.json"))) << "an interrupted run is not tested";

    // --resume continues from there to the end (a shorter run: a config
    // change, allowed), and the metrics log has no duplicate step.
    const int64_t stoppedAt = last.header.step;
    const int64_t end = stoppedAt + 3;
    std::string resumed;
    ASSERT_EQ(run(train + " --resume --allow-config-change --set train.steps=" + std::to_string(end),
                  resumed),
              0)
        << resumed;
    EXPECT_NE(resumed.find("resumed from " + dir.file("run/last.pt") + " at step " +
                           std::to_string(stoppedAt)),
              std::string::npos)
        << resumed;
    EXPECT_EQ(fwp::readCheckpointFile(dir.file("run/last.pt")).header.step, end);
    const std::vector<int64_t> steps = trainSteps(dir.file("run/metrics.jsonl"));
    std::vector<int64_t> expected;
    for (int64_t s = 1; s <= end; ++s)
      expected.push_back(s);
    EXPECT_EQ(steps, expected) << "the resumed log continues the first one without duplicates";
    EXPECT_TRUE(std::filesystem::exists(dir.file("run/test.json"))) << resumed;
  }
}

TEST(Tools, LmTrainSecondSignalExitsAtOnce) {
  TempDir dir;
  writeCorpus(dir);
  dir.write("long.toml", longRunConfig(dir, 1000000));
  const pid_t pid = startTraining(dir, std::string(FWP_LM_PATH) +
                                           " --threads 1 train --no-progress-bar --config " +
                                           dir.file("long.toml"));
  // Two signals at once: the second ends the process at once with 128 + its
  // number (pending signals arrive lowest number first, so either may be the
  // second) instead of finishing the step and exiting with 0.
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  const std::string output = readText(dir.file("out.txt"));
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_TRUE(WEXITSTATUS(status) == 128 + SIGINT || WEXITSTATUS(status) == 128 + SIGTERM)
      << WEXITSTATUS(status) << "\n" << output;
  // Whatever the moment, no temporary or partial file is left.
  for (const std::string &name : folderEntries(dir.file("run")))
    EXPECT_TRUE(name == "last.pt" || name == "metrics.jsonl" || name == "config.toml") << name;
  if (std::filesystem::exists(dir.file("run/last.pt")))
    EXPECT_NO_THROW(fwp::readCheckpointFile(dir.file("run/last.pt")));
}

namespace {

/// Whether process `pid` holds a file open in `folder` that has no name
/// there (what fwp's atomic writer writes into before the commit).
bool cacheBeingWritten(pid_t pid, const std::string &folder) {
  const std::string fds = "/proc/" + std::to_string(pid) + "/fd";
  bool found = false;
  for (const std::string &name : folderEntries(fds)) {
    char target[4096];
    const ssize_t n = ::readlink((fds + "/" + name).c_str(), target, sizeof target - 1);
    if (n <= 0)
      continue;
    const std::string link(target, static_cast<size_t>(n));
    found = found || (link.rfind(folder + "/", 0) == 0 && link.find("(deleted)") != std::string::npos);
  }
  return found;
}

std::vector<int32_t> tokenIds(const fwp::lm::Corpus &corpus, fwp::lm::Split split) {
  const torch::Tensor t = corpus.tokens(split).contiguous();
  return std::vector<int32_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + t.numel());
}

} // namespace

TEST(Tools, KilledCacheBuildsLeaveNothingThatIsTrusted) {
  // A training file of ~20 MB: building its cache takes long enough to be
  // killed in the middle (reading, renumbering in place, hashing, committing).
  TempDir reference, dir;
  std::string train;
  uint32_t state = 11;
  for (int line = 0; line < 400000; ++line) {
    for (int i = 0; i < 8; ++i) {
      state = state * 1103515245u + 12345u;
      train += " w" + std::to_string((state >> 16) % 5000);
    }
    train += "\n";
  }
  for (const TempDir *folder : {&reference, &dir}) {
    folder->write("wiki.train.tokens", train);
    folder->write("wiki.valid.tokens", " w1 w2 w3\n");
    folder->write("wiki.test.tokens", " w3 w2 w1\n");
  }
  // The uninterrupted build, timed: the kills land within its duration.
  const auto start = std::chrono::steady_clock::now();
  std::string output;
  ASSERT_EQ(run(std::string(FWP_LM_PATH) + " --threads 1 prepare --data " + reference.path(), output), 0)
      << output;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fwp::lm::CorpusOptions options;
  options.dataDir = reference.path();
  const fwp::lm::Corpus expected = fwp::lm::Corpus::open(options);
  ASSERT_TRUE(expected.loadedFromCache());
  const std::vector<int32_t> expectedTrain = tokenIds(expected, fwp::lm::Split::Train);

  std::mt19937 random(5);
  int killedBeforeTheEnd = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    SCOPED_TRACE(attempt);
    ::unlink(dir.file(fwp::lm::Corpus::kCacheFileName).c_str());
    const pid_t pid = spawn(std::string(FWP_LM_PATH) + " --threads 1 prepare --data " + dir.path(),
                            reference.file("prepare.out"));
    // Once the cache's (unnamed) file is open, a random moment of the build.
    bool writing = false;
    for (int i = 0; i < 3000 && !writing; ++i) {
      writing = cacheBeingWritten(pid, dir.path());
      if (!writing)
        ::usleep(10000);
    }
    const double delay = seconds * 0.5 * std::uniform_real_distribution<double>()(random);
    ::usleep(static_cast<useconds_t>(delay * 1e6));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    killedBeforeTheEnd += writing && WIFSIGNALED(status) &&
                          !std::filesystem::exists(dir.file(fwp::lm::Corpus::kCacheFileName));
    // Only the texts and, if the kill came after the commit, the whole cache.
    for (const std::string &name : folderEntries(dir.path()))
      EXPECT_TRUE(name.rfind("wiki.", 0) == 0 || name == fwp::lm::Corpus::kCacheFileName) << name;
    options.dataDir = dir.path();
    const fwp::lm::Corpus reopened = fwp::lm::Corpus::open(options);
    EXPECT_EQ(tokenIds(reopened, fwp::lm::Split::Train), expectedTrain);
    EXPECT_EQ(tokenIds(reopened, fwp::lm::Split::Valid), tokenIds(expected, fwp::lm::Split::Valid));
  }
  EXPECT_GT(killedBeforeTheEnd, 0) << "no kill landed inside a build (" << seconds << " s)";
}
