// Tokenisation, vocabulary, token cache and batching of fwp::lm::Corpus,
// checked against hand-derived ids and counts.

#include "TestUtil.h"

#include "fwp/lm/Corpus.h"
#include "fwp/runtime/Layer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>

using fwp::lm::Corpus;
using fwp::lm::CorpusOptions;
using fwp::lm::OrderedBatches;
using fwp::lm::Split;
using fwp::lm::testing::TempDir;

namespace {

// Line terminators \n, \n, \r\n, \n and none; an NBSP inside line 4; an empty
// line 2 and a line of spaces... counted by hand in the tests below.
const char *kTrain = " = Valley = \n"
                     "\n"
                     " the cat sat on the mat . \r\n"
                     "the dog\xc2\xa0saw the cat .\n"
                     "<unk> the";
const char *kValid = "the zebra .\n"
                     "   \n";
const char *kTest = "dog saw the cat\n";

std::vector<int32_t> ids(const torch::Tensor &t) {
  auto c = t.contiguous();
  return std::vector<int32_t>(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
}

void writeCorpus(const TempDir &dir, const char *train = kTrain, const char *valid = kValid,
                 const char *test = kTest) {
  dir.write("wiki.train.tokens", train);
  dir.write("wiki.valid.tokens", valid);
  dir.write("wiki.test.tokens", test);
}

CorpusOptions optionsFor(const TempDir &dir) {
  CorpusOptions options;
  options.dataDir = dir.path();
  return options;
}

std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const fwp::Error &e) {
    return e.what();
  }
  return "(no fwp::Error)";
}

} // namespace

TEST(Corpus, VocabularyOrderAndCountsByHand) {
  TempDir dir;
  writeCorpus(dir);
  Corpus corpus = Corpus::open(optionsFor(dir));
  const auto &vocab = corpus.vocab();
  // the x5; '=', cat, '.' x2 in first-occurrence order; then the singletons.
  const std::vector<std::string> expected = {"<eos>", "the", "=",   "cat", ".",   "Valley",
                                             "sat",   "on",  "mat", "dog", "saw", "<unk>"};
  ASSERT_EQ(vocab.size(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(vocab.symbol(static_cast<int64_t>(i)), expected[i]) << "id " << i;
    EXPECT_EQ(vocab.id(expected[i]), static_cast<int32_t>(i));
  }
  const std::vector<int64_t> counts = {5, 5, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1};
  for (size_t i = 0; i < counts.size(); ++i)
    EXPECT_EQ(vocab.count(static_cast<int64_t>(i)), counts[i]) << expected[i];
  EXPECT_EQ(vocab.id("zebra"), fwp::lm::Vocabulary::kAbsent);

  EXPECT_EQ(ids(corpus.tokens(Split::Train)),
            (std::vector<int32_t>{2, 5, 2, 0, 0, 1, 3, 6, 7, 1, 8, 4, 0, 1, 9, 10, 1, 3, 4, 0, 11, 1, 0}));
  // "zebra" is not in the training split: it becomes <unk>; the blank line is one <eos>.
  EXPECT_EQ(ids(corpus.tokens(Split::Valid)), (std::vector<int32_t>{1, 11, 4, 0, 0}));
  EXPECT_EQ(ids(corpus.tokens(Split::Test)), (std::vector<int32_t>{9, 10, 1, 3, 0}));
  EXPECT_EQ(corpus.numTokens(Split::Train), 23);
}

TEST(Corpus, SkipEmptyLinesOption) {
  TempDir dir;
  writeCorpus(dir);
  CorpusOptions options = optionsFor(dir);
  options.skipEmptyLines = true;
  Corpus corpus = Corpus::open(options);
  EXPECT_EQ(corpus.vocab().count(0), 4); // one <eos> fewer: line 2 is gone
  EXPECT_EQ(ids(corpus.tokens(Split::Valid)), (std::vector<int32_t>{1, 11, 4, 0}));
  EXPECT_EQ(corpus.numTokens(Split::Train), 22);
}

TEST(Corpus, SplitsOnPythonWhitespace) {
  // U+3000, U+2028, \x1f, space, U+00A0, U+0085 and U+2009 separate tokens;
  // U+200B (zero-width space) and U+00E9 do not (as Python's str.split()).
  auto tokens = fwp::lm::splitTokens("a\xe3\x80\x80" "b\xe2\x80\xa8" "c\x1f" "d e\xc2\xa0"
                                     "f\xc2\x85g\xe2\x80\x89h i\xe2\x80\x8bj caf\xc3\xa9 \t\v\f");
  std::vector<std::string> got(tokens.begin(), tokens.end());
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "c", "d", "e", "f", "g", "h",
                                           "i\xe2\x80\x8bj", "caf\xc3\xa9"}));
}

TEST(Corpus, CacheIsReusedAndRebuiltWhenTextChanges) {
  TempDir dir;
  writeCorpus(dir);
  {
    Corpus first = Corpus::open(optionsFor(dir));
    EXPECT_FALSE(first.loadedFromCache());
    EXPECT_NE(first.rebuildReason().find("no cache file"), std::string::npos);
  }
  Corpus second = Corpus::open(optionsFor(dir));
  EXPECT_TRUE(second.loadedFromCache());
  EXPECT_EQ(ids(second.tokens(Split::Test)), (std::vector<int32_t>{9, 10, 1, 3, 0}));

  // Same size, same mtime, different content: the hash must notice.
  struct stat before {};
  ASSERT_EQ(::stat(dir.file("wiki.test.tokens").c_str(), &before), 0);
  dir.write("wiki.test.tokens", "cat saw the dog\n");
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, dir.file("wiki.test.tokens").c_str(), times, 0), 0);
  Corpus third = Corpus::open(optionsFor(dir));
  EXPECT_FALSE(third.loadedFromCache());
  EXPECT_NE(third.rebuildReason().find("wiki.test.tokens changed content"), std::string::npos)
      << third.rebuildReason();
  EXPECT_EQ(ids(third.tokens(Split::Test)), (std::vector<int32_t>{3, 10, 1, 9, 0}));
  // The tensors of `second` still point at the old (unlinked) mapping.
  EXPECT_EQ(ids(second.tokens(Split::Test)), (std::vector<int32_t>{9, 10, 1, 3, 0}));

  // A new size is noticed too, and a change of options.
  dir.write("wiki.train.tokens", std::string(kTrain) + " cat\n");
  Corpus fourth = Corpus::open(optionsFor(dir));
  EXPECT_FALSE(fourth.loadedFromCache());
  EXPECT_NE(fourth.rebuildReason().find("changed size"), std::string::npos);
  EXPECT_EQ(fourth.vocab().count(fourth.vocab().id("cat")), 3);
  CorpusOptions skipping = optionsFor(dir);
  skipping.skipEmptyLines = true;
  EXPECT_FALSE(Corpus::open(skipping).loadedFromCache());

  // Touching a file without changing it keeps the cache.
  ASSERT_EQ(::utimensat(AT_FDCWD, dir.file("wiki.valid.tokens").c_str(), nullptr, 0), 0);
  EXPECT_TRUE(Corpus::open(skipping).loadedFromCache());
}

TEST(Corpus, CorruptOrForeignCacheIsRebuilt) {
  TempDir dir;
  writeCorpus(dir);
  Corpus::open(optionsFor(dir));
  const std::string cache = dir.file(Corpus::kCacheFileName);
  ASSERT_EQ(::truncate(cache.c_str(), 200), 0);
  Corpus truncated = Corpus::open(optionsFor(dir));
  EXPECT_FALSE(truncated.loadedFromCache());
  EXPECT_NE(truncated.rebuildReason().find("truncated"), std::string::npos) << truncated.rebuildReason();
  dir.write(Corpus::kCacheFileName, std::string(4096, 'x'));
  Corpus foreign = Corpus::open(optionsFor(dir));
  EXPECT_FALSE(foreign.loadedFromCache());
  EXPECT_NE(foreign.rebuildReason().find("not an fwp-lm cache"), std::string::npos);
  EXPECT_EQ(ids(foreign.tokens(Split::Valid)), (std::vector<int32_t>{1, 11, 4, 0, 0}));
}

TEST(Corpus, ADamagedCacheIsRebuiltNeverTrusted) {
  // A flipped byte anywhere after the header (ids, vocabulary, counts) is
  // found by the cache's payload hash: the cache is rebuilt from the text
  // and hands out the same ids as the intact one.
  TempDir dir;
  writeCorpus(dir);
  const Corpus pristine = Corpus::open(optionsFor(dir));
  const std::vector<int32_t> train = ids(pristine.tokens(Split::Train));
  const std::vector<int32_t> valid = ids(pristine.tokens(Split::Valid));
  const std::string cache = dir.file(Corpus::kCacheFileName);
  std::string intact;
  {
    std::ifstream in(cache, std::ios::binary);
    intact.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(intact.size(), 260u);
  // The first train id (just after the 208-byte header), the middle, the last
  // count byte.
  for (size_t at : {size_t(209), intact.size() / 2, intact.size() - 1}) {
    SCOPED_TRACE(at);
    std::string damaged = intact;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x01);
    ::unlink(cache.c_str()); // a new file: `pristine` maps the old one
    dir.write(Corpus::kCacheFileName, damaged);
    Corpus reopened = Corpus::open(optionsFor(dir));
    EXPECT_FALSE(reopened.loadedFromCache());
    EXPECT_NE(reopened.rebuildReason().find("is corrupt"), std::string::npos) << reopened.rebuildReason();
    EXPECT_EQ(ids(reopened.tokens(Split::Train)), train);
    EXPECT_EQ(ids(reopened.tokens(Split::Valid)), valid);
    EXPECT_EQ(reopened.vocab().size(), pristine.vocab().size());
    EXPECT_TRUE(Corpus::open(optionsFor(dir)).loadedFromCache()) << "the rebuilt cache is whole";
  }
}

TEST(Corpus, SeparateCacheDirectory) {
  TempDir data, cache;
  writeCorpus(data);
  CorpusOptions options = optionsFor(data);
  options.cacheDir = cache.file("new/sub"); // created on demand
  Corpus corpus = Corpus::open(options);
  EXPECT_EQ(corpus.cachePath(), cache.file("new/sub/") + Corpus::kCacheFileName);
  struct stat st {};
  EXPECT_EQ(::stat(cache.file("new/sub/fwp-lm-cache.bin").c_str(), &st), 0);
  EXPECT_NE(::stat(data.file(Corpus::kCacheFileName).c_str(), &st), 0);
}

TEST(Corpus, MissingFileNamesIt) {
  TempDir dir;
  dir.write("wiki.train.tokens", kTrain);
  dir.write("wiki.test.tokens", kTest);
  std::string message = errorOf([&] { Corpus::open(optionsFor(dir)); });
  EXPECT_NE(message.find(dir.file("wiki.valid.tokens")), std::string::npos) << message;
  EXPECT_NE(message.find("No such file"), std::string::npos) << message;
}

TEST(Corpus, MalformedFilesNameFileAndLine) {
  TempDir dir;
  writeCorpus(dir, "good line\nstill good\nbad \xff byte\n");
  std::string message = errorOf([&] { Corpus::open(optionsFor(dir)); });
  EXPECT_NE(message.find("wiki.train.tokens:3: invalid UTF-8"), std::string::npos) << message;

  writeCorpus(dir, kTrain, "the cat\nthe \xed\xa0\x80 surrogate\n"); // UTF-16 surrogate
  message = errorOf([&] { Corpus::open(optionsFor(dir)); });
  EXPECT_NE(message.find("wiki.valid.tokens:2: invalid UTF-8"), std::string::npos) << message;

  writeCorpus(dir, kTrain, kValid, std::string("the\0cat\n", 8).c_str());
  dir.write("wiki.test.tokens", std::string("the\0cat\n", 8));
  message = errorOf([&] { Corpus::open(optionsFor(dir)); });
  EXPECT_NE(message.find("wiki.test.tokens:1: NUL byte"), std::string::npos) << message;

  writeCorpus(dir, "the cat\n", "the dog\n");
  message = errorOf([&] { Corpus::open(optionsFor(dir)); });
  EXPECT_NE(message.find("wiki.valid.tokens:1: token 'dog' does not occur in"), std::string::npos)
      << message;

  writeCorpus(dir, "");
  message = errorOf([&] { Corpus::open(optionsFor(dir)); });
  EXPECT_NE(message.find("wiki.train.tokens holds no text"), std::string::npos) << message;
  // No half-written cache (nor any temporary file) is left behind by any of these.
  struct stat st {};
  EXPECT_NE(::stat(dir.file(Corpus::kCacheFileName).c_str(), &st), 0);
  std::vector<std::string> names;
  for (const auto &entry : std::filesystem::directory_iterator(dir.path()))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"}));
}

TEST(Corpus, ContentHashIgnoresChunkingAndSeesEveryByte) {
  std::string text;
  for (int i = 0; i < 1000; ++i)
    text += static_cast<char>((i * 7919) % 251);
  fwp::lm::ContentHash whole;
  whole.update(text.data(), text.size());
  for (size_t piece : {1u, 3u, 31u, 32u, 33u, 500u}) {
    fwp::lm::ContentHash pieces;
    for (size_t at = 0; at < text.size(); at += piece)
      pieces.update(text.data() + at, std::min(piece, text.size() - at));
    EXPECT_EQ(pieces.digest(), whole.digest()) << "piece " << piece;
  }
  for (size_t at : {0u, 31u, 500u, 999u}) {
    std::string changed = text;
    changed[at] ^= 1;
    fwp::lm::ContentHash other;
    other.update(changed.data(), changed.size());
    EXPECT_NE(other.digest(), whole.digest()) << "byte " << at;
  }
  fwp::lm::ContentHash shorter;
  shorter.update(text.data(), text.size() - 1);
  EXPECT_NE(shorter.digest(), whole.digest());
}

TEST(OrderedBatches, RowsAndSegmentsByHand) {
  auto tokens = torch::arange(23, torch::kInt32);
  OrderedBatches batches(tokens, 2, 4);
  // Rows: 0..10 and 11..21 (token 22 is trimmed); 10 targets per row.
  EXPECT_EQ(batches.rowLength(), 11);
  EXPECT_EQ(batches.numSegments(), 3);
  EXPECT_EQ(batches.numTargets(), 20);
  auto first = batches.segment(0);
  EXPECT_TRUE(torch::equal(first.inputs, torch::tensor({{0, 1, 2, 3}, {11, 12, 13, 14}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(first.targets, torch::tensor({{1, 2, 3, 4}, {12, 13, 14, 15}}, torch::kInt64)));
  auto last = batches.segment(2);
  EXPECT_TRUE(torch::equal(last.inputs, torch::tensor({{8, 9}, {19, 20}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(last.targets, torch::tensor({{9, 10}, {20, 21}}, torch::kInt64)));
  EXPECT_THROW(batches.segment(3), fwp::Error);
  EXPECT_THROW(OrderedBatches(torch::arange(3, torch::kInt32), 2, 4), fwp::Error);
}
