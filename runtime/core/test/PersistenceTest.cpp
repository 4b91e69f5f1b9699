//===- PersistenceTest.cpp - Atomic writes and the checkpoint format ------===//
//
// writeFileAtomically (AtomicFile.h) and the checkpoint envelope
// (CheckpointFile.h): contents round-trip, no temporary file is ever left,
// a symlink at the target is replaced rather than followed, and every
// damaged checkpoint (a flipped byte anywhere, a truncation, an extension, a
// foreign file) is an fwp::Error.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/CheckpointFile.h"
#include "fwp/runtime/Layer.h"

#include "TestSupport.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

namespace {

namespace fs = std::filesystem;

class Persistence : public testing::Test {
protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "fwp-persist-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir = pattern;
  }
  void TearDown() override { fwp::test::removeTree(dir); }
  std::string read(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  /// Every name below `folder`, sorted.
  std::vector<std::string> entries(const std::string &folder = "") {
    std::vector<std::string> names;
    for (const auto &entry : fs::directory_iterator(folder.empty() ? dir : folder)) {
      names.push_back(entry.path().filename().string());
      if (entry.is_directory())
        for (const std::string &name : entries(entry.path().string()))
          names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string dir;
};

TEST_F(Persistence, AtomicWritesReplaceWholeFilesAndLeaveNothingElse) {
  const std::string path = dir + "/sub/folder/file.bin";
  fwp::writeFileAtomically(path, std::string("first\0version", 13));
  EXPECT_EQ(read(path), std::string("first\0version", 13));
  fwp::writeFileAtomically(path, [](std::ostream &out) { out << "second"; });
  EXPECT_EQ(read(path), "second");
  EXPECT_EQ(entries(), (std::vector<std::string>{"file.bin", "folder", "sub"}));

  // A symlink at the target is replaced, never written through.
  std::ofstream(dir + "/victim") << "keep";
  ASSERT_EQ(::symlink((dir + "/victim").c_str(), (dir + "/link").c_str()), 0);
  fwp::writeFileAtomically(dir + "/link", "new");
  EXPECT_EQ(read(dir + "/victim"), "keep");
  EXPECT_FALSE(fs::is_symlink(dir + "/link"));
  EXPECT_EQ(read(dir + "/link"), "new");

  // A folder that cannot be written: an error naming the file.
  if (::geteuid() != 0) {
    ::chmod((dir + "/sub").c_str(), 0500);
    EXPECT_THROW(fwp::writeFileAtomically(dir + "/sub/x", "y"), fwp::Error);
    ::chmod((dir + "/sub").c_str(), 0700);
  }
  EXPECT_THROW(fwp::writeFileAtomically(dir + "/victim/inside", "y"), fwp::Error);
}

TEST_F(Persistence, StreamedAtomicWritesAppearOnlyOnCommit) {
  const std::string path = dir + "/cache.bin";
  std::ofstream(path) << "old";
  {
    // Written, patched and read back in place; abandoned (an error): the old
    // file stays and nothing else is left.
    fwp::AtomicFileWriter file(path);
    file.write("0123456789");
    ASSERT_EQ(::pwrite(file.fd(), "AB", 2, 3), 2);
    char back[4] = {};
    ASSERT_EQ(::pread(file.fd(), back, 3, 2), 3);
    EXPECT_EQ(std::string(back), "2AB");
    EXPECT_EQ(read(path), "old");
    EXPECT_EQ(entries(), (std::vector<std::string>{"cache.bin"}));
  }
  EXPECT_EQ(read(path), "old");
  EXPECT_EQ(entries(), (std::vector<std::string>{"cache.bin"}));
  {
    fwp::AtomicFileWriter file(path);
    file.write("0123456789");
    ASSERT_EQ(::pwrite(file.fd(), "AB", 2, 3), 2);
    file.commit();
    EXPECT_EQ(file.fd(), -1);
  }
  EXPECT_EQ(read(path), "012AB56789");
  EXPECT_EQ(entries(), (std::vector<std::string>{"cache.bin"}));
}

TEST_F(Persistence, CheckpointsRoundTripAndEveryDamageIsAnError) {
  const std::string path = dir + "/last.pt";
  fwp::CheckpointHeader header;
  header.trainer = "fwp-train";
  header.codeVersion = fwp::fwpCodeVersion();
  header.config = "[train]\nsteps = 10\n";
  header.artifactDigest = std::string(64, 'a');
  header.step = 7;
  header.extra = {{"note", "x"}};
  std::string payload(4000, '\0');
  std::mt19937 random(3);
  for (char &byte : payload)
    byte = static_cast<char>(random());
  fwp::writeCheckpointFile(path, header, payload);
  fwp::CheckpointFile file = fwp::readCheckpointFile(path);
  EXPECT_EQ(file.payload, payload);
  EXPECT_EQ(file.header.trainer, "fwp-train");
  EXPECT_EQ(file.header.config, header.config);
  EXPECT_EQ(file.header.artifactDigest, header.artifactDigest);
  EXPECT_EQ(file.header.step, 7);
  EXPECT_EQ(file.header.extra["note"], "x");
  EXPECT_FALSE(file.header.codeVersion.empty());

  const std::string bytes = read(path);
  const std::string damaged = dir + "/damaged.pt";
  auto expectRefused = [&](const std::string &what, const std::string &content) {
    std::ofstream(damaged, std::ios::binary | std::ios::trunc) << content;
    EXPECT_THROW(fwp::readCheckpointFile(damaged), fwp::Error) << what;
  };
  int flips = 0;
  for (size_t at = 0; at < bytes.size(); at += 1 + random() % 97, ++flips) {
    std::string copy = bytes;
    copy[at] = static_cast<char>(copy[at] ^ (1 << (random() % 8)));
    expectRefused("a flipped bit at byte " + std::to_string(at), copy);
  }
  EXPECT_GT(flips, 40);
  for (size_t size : {size_t(0), size_t(8), size_t(55), size_t(56), bytes.size() / 2,
                      bytes.size() - 1})
    expectRefused("truncated to " + std::to_string(size), bytes.substr(0, size));
  expectRefused("extended", bytes + "x");
  expectRefused("a text file", "[train]\nsteps = 1\n");
  EXPECT_THROW(fwp::readCheckpointFile(dir + "/missing.pt"), fwp::Error);
}

} // namespace
