// Data parallelism and gradient accumulation in fwp-train, end to end: two
// CPU processes (Gloo on 127.0.0.1) against one process with the same global
// batch, resume across process counts, and a killed or hung rank.

#include "TestUtil.h"
#include "ToolUtil.h"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using fwp::train::test::TempDir;
using namespace fwp::train::test::tools;

namespace {

/// A tiny delta-net model (eager reference layer) without dropout, so that
/// runs of different process counts compute the same function.
std::string tinyConfig(const std::filesystem::path &dir) {
  return "name = \"dp\"\n"
         "[data]\ntask = \"codeexec\"\ndir = \"" + (dir / "data").string() + "\"\n"
         "statements = 5\ntrain = 64\nvalid = 16\ntest = 16\n"
         "[model]\nkind = \"fwp\"\nlayer = \"delta_net\"\nreference = true\n"
         "layers = 1\nhidden = 16\nheads = 2\nff_mult = 2\ndropout = 0.0\n"
         "[train]\nsteps = 4\nbatch = 8\nlog_every = 1\neval_every = 2\ncheckpoint_every = 2\n"
         "lr = 0.003\n";
}

struct Fixture {
  TempDir dir;
  std::string train;
  explicit Fixture(const std::string &name) : dir(name) {
    fwp::train::test::writeText(dir / "dp.toml", tinyConfig(dir.path()));
    train = std::string(FWP_TRAIN_PATH) + " --config " + (dir / "dp.toml").string() +
            " --plain --threads 1 --dist-timeout 60";
  }
  /// Runs fwp-train into run folder `run` with extra arguments; fails the
  /// test when it fails.
  Result run(const std::string &run, const std::string &arguments) {
    Result result = runTool(train + " --run-dir " + (dir / run).string() + " " + arguments);
    EXPECT_EQ(result.code, 0) << result.output;
    return result;
  }
};

double firstLoss(const std::filesystem::path &run) {
  return metricsRecords(run, "train").at(0)["loss"].get<double>();
}

} // namespace

TEST(DataParallel, TwoProcessesEqualOneWithTheGlobalBatch) {
  Fixture f("dp_equal");
  f.run("one", "--set train.batch=8");
  Result two = f.run("two", "--set train.batch=4 --nproc 2");
  EXPECT_NE(two.output.find("batch 4 x 2 processes (gloo) x 1 micro-batches = 8"),
            std::string::npos)
      << two.output;
  // Only rank 0 reports: one line per step.
  EXPECT_EQ(two.output.find("step 1/4"), two.output.rfind("step 1/4")) << two.output;
  expectSameRun(f.dir / "one", f.dir / "two");
  for (const char *file : {"best.pt", "last.pt", "test.json", "config.toml"})
    EXPECT_TRUE(std::filesystem::exists(f.dir / "two" / file)) << file;

  // The comparison can fail: two processes of batch 8 see 16 examples.
  f.run("two16", "--set train.batch=8 --nproc 2");
  EXPECT_GT(std::abs(firstLoss(f.dir / "two16") - firstLoss(f.dir / "one")), 1e-4);
}

TEST(DataParallel, AccumulationEqualsALargerBatch) {
  Fixture f("dp_accumulate");
  f.run("one", "--set train.batch=8");
  f.run("acc2", "--set train.batch=4 --set train.accumulate=2");
  expectSameRun(f.dir / "one", f.dir / "acc2");
  // Both at once: 2 processes x 2 micro-batches x 2 examples.
  f.run("both", "--set train.batch=2 --set train.accumulate=2 --nproc 2");
  expectSameRun(f.dir / "one", f.dir / "both");
}

TEST(DataParallel, ResumeAcrossProcessCounts) {
  Fixture f("dp_resume");
  f.run("one", "--set train.batch=8");
  // Two processes for steps 1-2, then one process (the same global batch).
  f.run("a", "--set train.batch=4 --nproc 2 --steps 2");
  Result a = f.run("a", "--set train.batch=8 --resume --allow-config-change");
  EXPECT_NE(a.output.find("note: the checkpoint was trained with 2 process(es)"),
            std::string::npos)
      << a.output;
  expectSameRun(f.dir / "one", f.dir / "a");
  // And the other way round.
  f.run("b", "--set train.batch=8 --steps 2");
  Result b = f.run("b", "--set train.batch=4 --nproc 2 --resume --allow-config-change");
  EXPECT_NE(b.output.find("this run uses 2 process(es)"), std::string::npos) << b.output;
  expectSameRun(f.dir / "one", f.dir / "b");
}

namespace {

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
  ::getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

/// Waits up to `seconds` for `pid`; its wait status, or nullopt (still running).
std::optional<int> waitFor(pid_t pid, double seconds) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

/// Waits until `file` holds `text` (at most 60 s).
bool waitForText(const std::filesystem::path &file, const std::string &text) {
  for (int i = 0; i < 3000; ++i) {
    if (readBytes(file).find(text) != std::string::npos)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

/// Starts the two ranks of a long run the way torchrun does (environment
/// variables), with the given collective timeout.
std::pair<pid_t, pid_t> startRanks(Fixture &f, double timeout) {
  const std::string command = std::string(FWP_TRAIN_PATH) + " --config " +
                              (f.dir / "dp.toml").string() +
                              " --plain --threads 1 --steps 1000000 --set train.batch=4"
                              " --set train.eval_every=0 --set train.log_every=10"
                              " --set train.checkpoint_every=0 --run-dir " +
                              (f.dir / "run").string() +
                              " --dist-timeout " + std::to_string(timeout);
  const std::string env = "env WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(freePort());
  pid_t rank0 = spawn(env + " RANK=0 " + command, f.dir / "rank0.txt");
  pid_t rank1 = spawn(env + " RANK=1 " + command, f.dir / "rank1.txt");
  return {rank0, rank1};
}

} // namespace

TEST(DataParallel, AKilledRankEndsTheOtherWithAMessage) {
  Fixture f("dp_kill");
  f.run("warm", "--steps 1"); // makes the data
  auto [rank0, rank1] = startRanks(f, 30);
  ASSERT_TRUE(waitForText(f.dir / "rank0.txt", "step 20/")) << readBytes(f.dir / "rank0.txt");
  ::kill(rank1, SIGKILL);
  ::waitpid(rank1, nullptr, 0);
  auto start = std::chrono::steady_clock::now();
  std::optional<int> status = waitFor(rank0, 40);
  if (!status) {
    ::kill(rank0, SIGKILL);
    ::waitpid(rank0, nullptr, 0);
    FAIL() << "rank 0 still runs 40 s after rank 1 was killed";
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  const std::string output = readBytes(f.dir / "rank0.txt");
  EXPECT_NE(output.find("error: distributed: rank 0 of 2"), std::string::npos) << output;
  EXPECT_NE(output.find("another rank has failed"), std::string::npos) << output;
}

TEST(DataParallel, AHungRankEndsTheOtherWithinTheTimeout) {
  Fixture f("dp_hang");
  f.run("warm", "--steps 1");
  auto [rank0, rank1] = startRanks(f, 3);
  ASSERT_TRUE(waitForText(f.dir / "rank0.txt", "step 20/")) << readBytes(f.dir / "rank0.txt");
  ::kill(rank1, SIGSTOP);
  auto start = std::chrono::steady_clock::now();
  std::optional<int> status = waitFor(rank0, 30);
  ::kill(rank1, SIGKILL);
  ::waitpid(rank1, nullptr, 0);
  if (!status) {
    ::kill(rank0, SIGKILL);
    ::waitpid(rank0, nullptr, 0);
    FAIL() << "rank 0 still runs 30 s after rank 1 stopped (timeout 3 s)";
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 2.0); // it waited for the timeout, not less
  EXPECT_LT(seconds, 20.0);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  const std::string output = readBytes(f.dir / "rank0.txt");
  EXPECT_NE(output.find("timeout (3 s"), std::string::npos) << output;
}

TEST(DataParallel, TheLauncherEndsTheJobWhenARankIsKilled) {
  Fixture f("dp_launcher");
  f.run("warm", "--steps 1");
  pid_t launcher = spawn(f.train + " --nproc 2 --steps 1000000 --set train.batch=4"
                                   " --set train.eval_every=0 --set train.log_every=10"
                                   " --set train.checkpoint_every=0 --run-dir " +
                             (f.dir / "run").string(),
                         f.dir / "out.txt");
  ASSERT_TRUE(waitForText(f.dir / "out.txt", "step 20/")) << readBytes(f.dir / "out.txt");
  std::istringstream children(readBytes("/proc/" + std::to_string(launcher) + "/task/" +
                                        std::to_string(launcher) + "/children"));
  std::vector<pid_t> ranks;
  for (pid_t pid; children >> pid;)
    ranks.push_back(pid);
  ASSERT_EQ(ranks.size(), 2u);
  ::kill(ranks[1], SIGKILL);
  std::optional<int> status = waitFor(launcher, 40);
  if (!status) {
    ::kill(launcher, SIGKILL);
    ::waitpid(launcher, nullptr, 0);
    FAIL() << "the launcher still runs 40 s after a rank was killed";
  }
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  const std::string output = readBytes(f.dir / "out.txt");
  EXPECT_NE(output.find("was killed by signal 9"), std::string::npos) << output;
  // Its children are gone too.
  for (pid_t rank : ranks)
    EXPECT_NE(::kill(rank, 0), 0) << "rank pid " << rank << " still exists";
}
