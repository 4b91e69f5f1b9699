// Data sets on disk: generation, determinism, disjoint splits, header checks.

#include "TestUtil.h"

#include "fwp/train/Tasks.h"

#include <set>

using namespace fwp::train;
using fwp::train::test::expectErrorContaining;
using fwp::train::test::TempDir;

namespace {

Config smallConfig(const std::string &task, const std::filesystem::path &dir) {
  std::string text = "[data]\ntask = \"" + task + "\"\ndir = \"" + dir.string() +
                     "\"\ntrain = 200\nvalid = 50\ntest = 50\n";
  text += task == "codeexec" ? "statements = 5\n" : "depth = 2\nmax_args = 3\n";
  return Config::fromString(text, "small.toml");
}

std::string fileText(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

} // namespace

TEST(Tasks, GenerationIsDeterministicAndSplitsAreDisjoint) {
  for (const char *task : {"codeexec", "listops"}) {
    SCOPED_TRACE(task);
    TempDir a(std::string("tasks_a_") + task), b(std::string("tasks_b_") + task);
    DataSpec specA = dataSpecFromConfig(smallConfig(task, a.path()));
    DataSpec specB = dataSpecFromConfig(smallConfig(task, b.path()));
    TaskData data = loadTaskData(specA, nullptr);
    loadTaskData(specB, nullptr);
    std::set<std::vector<int32_t>> seen;
    for (const auto &split : splitNames()) {
      EXPECT_EQ(fileText(specA.file(split)), fileText(specB.file(split)));
      for (const auto &example : data.split(split))
        EXPECT_TRUE(seen.insert(example.input).second) << "duplicate in " << split;
    }
    EXPECT_EQ(data.train.size(), 200u);
    EXPECT_EQ(data.test.size(), 50u);
    // Another seed gives other data.
    Config other = smallConfig(task, b.path() / "seed2");
    other.set("data.seed=2");
    DataSpec spec2 = dataSpecFromConfig(other);
    generateData(spec2, nullptr);
    EXPECT_NE(fileText(spec2.file("train")), fileText(specA.file("train")));
  }
}

TEST(Tasks, ExistingDataMustMatchTheConfig) {
  TempDir dir("tasks_mismatch");
  Config config = smallConfig("codeexec", dir.path());
  ensureData(dataSpecFromConfig(config), nullptr);
  auto before = std::filesystem::last_write_time(dir / "train.txt");
  ensureData(dataSpecFromConfig(config), nullptr); // same spec: kept as is
  EXPECT_EQ(std::filesystem::last_write_time(dir / "train.txt"), before);
  config.set("data.vars=5");
  expectErrorContaining<fwp::Error>([&] { ensureData(dataSpecFromConfig(config), nullptr); },
                                    "train.txt:1: the header");
  // A missing split is an error; the others are left alone.
  const std::string train = fileText(dir / "train.txt");
  std::filesystem::remove(dir / "test.txt");
  expectErrorContaining<fwp::Error>([&] { ensureData(dataSpecFromConfig(config), nullptr); },
                                    "missing data split(s)");
  EXPECT_EQ(fileText(dir / "train.txt"), train);
  // No split at all: generated.
  std::filesystem::remove(dir / "train.txt");
  std::filesystem::remove(dir / "valid.txt");
  ensureData(dataSpecFromConfig(config), nullptr);
  EXPECT_NE(fileText(dir / "train.txt").find("vars=5"), std::string::npos);
}

TEST(Tasks, ConfigErrors) {
  TempDir dir("tasks_cfg");
  Config bad = smallConfig("codeexec", dir.path());
  bad.set("data.task=sorting");
  expectErrorContaining<fwp::Error>([&] { dataSpecFromConfig(bad); },
                                    "small.toml: data.task must be");
  Config ops = smallConfig("listops", dir.path());
  ops.set("data.operators=[\"MIN\", \"POW\"]");
  expectErrorContaining<fwp::Error>([&] { dataSpecFromConfig(ops); }, "unknown operator \"POW\"");
}
