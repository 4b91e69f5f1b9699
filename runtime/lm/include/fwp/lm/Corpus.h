//===- Corpus.h - WikiText-style word-level corpora with a mapped cache -*- C++ -*-===//
//
// Reads the standard `wiki.{train,valid,test}.tokens` files the way the
// Transformer-XL / recurrent-fwp code does: each line is stripped and split on
// whitespace and one `<eos>` is appended per line; the vocabulary is `<eos>`
// (id 0) followed by every type of the training split ordered by decreasing
// training count, ties by first occurrence (Python's Counter.most_common).
//
// The token ids of the three splits are cached in one binary file that later
// runs memory-map (POSIX mmap) instead of re-tokenising ~540 MB of text. The
// cache is keyed by the size and a 64-bit content hash of each text file and
// by the tokenisation options; any mismatch rebuilds it (docs/language-modelling.md).
//
//===----------------------------------------------------------------------===//
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fwp::lm {

enum class Split { Train = 0, Valid = 1, Test = 2 };
const char *splitName(Split split);     ///< "train", "valid", "test"
Split parseSplit(const std::string &name); ///< throws fwp::Error for others

struct CorpusOptions {
  /// Folder holding wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens.
  std::string dataDir;
  /// Where the cache file goes; empty means dataDir.
  std::string cacheDir;
  /// false (the Transformer-XL behaviour): an empty line still yields one
  /// `<eos>`. true: empty (all-whitespace) lines yield nothing.
  bool skipEmptyLines = false;
  /// A valid/test token absent from the training split becomes this symbol
  /// when the vocabulary has it (WikiText's own "<unk>"); otherwise it is an
  /// fwp::Error naming the file and line.
  std::string unknownSymbol = "<unk>";
  /// Print what happens (building, loading, why a cache was rebuilt) here.
  bool verbose = false;
};

/// The word-level vocabulary: id -> symbol, symbol -> id, training counts.
class Vocabulary {
public:
  static constexpr int32_t kEos = 0;
  static constexpr int32_t kAbsent = -1;

  int64_t size() const { return static_cast<int64_t>(symbols_.size()); }
  const std::string &symbol(int64_t id) const;
  /// kAbsent when `symbol` is not in the vocabulary.
  int32_t id(std::string_view symbol) const;
  /// Occurrences in the training split (`<eos>`: one per line that produced one).
  int64_t count(int64_t id) const;

  /// Built by the corpus; exposed so that tests and tools can make small ones.
  Vocabulary(std::vector<std::string> symbols, std::vector<int64_t> counts);
  Vocabulary() = default;

private:
  void index();
  std::vector<std::string> symbols_;
  std::vector<int64_t> counts_;
  std::vector<int32_t> table_; ///< open addressing over symbols_, -1 = empty
};

/// Splits one line into whitespace-separated tokens exactly as Python's
/// `str.split()` does on UTF-8 text (ASCII and Unicode white space).
std::vector<std::string_view> splitTokens(std::string_view line);

/// A 64-bit hash of byte streams, fed incrementally; the value does not
/// depend on how the stream is cut into update() calls.
class ContentHash {
public:
  ContentHash();
  void update(const void *data, size_t size);
  uint64_t digest() const;

private:
  void stripe(const unsigned char *p);
  uint64_t lanes_[4];
  unsigned char pending_[32];
  size_t pendingSize_ = 0;
  uint64_t total_ = 0;
};

struct CorpusFileInfo {
  std::string path;
  uint64_t size = 0;
  int64_t mtimeNs = 0; ///< informational; not part of the cache key
  uint64_t hash = 0;
};

class Corpus {
public:
  /// Loads the cache when it matches the text files, else (re)builds it.
  /// Throws fwp::Error naming the file for a missing/unreadable/malformed
  /// text file.
  static Corpus open(const CorpusOptions &options);

  const Vocabulary &vocab() const { return *vocab_; }
  std::shared_ptr<const Vocabulary> sharedVocab() const { return vocab_; }
  /// The token ids of a split, int32 [N], a read-only view of the mapped cache
  /// (clone() before writing to it).
  torch::Tensor tokens(Split split) const;
  int64_t numTokens(Split split) const;

  /// True when this open() reused an existing cache file.
  bool loadedFromCache() const { return loadedFromCache_; }
  /// Why the cache was (re)built, empty when it was loaded.
  const std::string &rebuildReason() const { return rebuildReason_; }
  const std::string &cachePath() const { return cachePath_; }
  const CorpusFileInfo &fileInfo(Split split) const;

  /// The cache file name inside cacheDir.
  static constexpr const char *kCacheFileName = "fwp-lm-cache.bin";
  /// The text file name of a split inside dataDir.
  static std::string textFileName(Split split);

private:
  struct Mapping;
  /// Maps the cache when it matches files_ and options (hashing the text
  /// files unless hashesKnown); else false with the reason in `why`.
  bool loadCache(const CorpusOptions &options, bool hashesKnown, std::string &why);
  std::shared_ptr<Mapping> mapping_;
  std::shared_ptr<const Vocabulary> vocab_;
  int64_t tokenOffset_[3] = {0, 0, 0}; ///< byte offsets into the mapping
  int64_t tokenCount_[3] = {0, 0, 0};
  CorpusFileInfo files_[3];
  bool loadedFromCache_ = false;
  std::string rebuildReason_;
  std::string cachePath_;
};

/// Contiguous streams for training and carry-over evaluation (the
/// Transformer-XL "ordered iterator"): the first batchSize * (N / batchSize)
/// tokens are cut into batchSize equal rows; segment i holds positions
/// [i L, i L + len) of every row as inputs and the next token as targets,
/// len = min(L, rowLength - 1 - i L).
class OrderedBatches {
public:
  OrderedBatches(torch::Tensor tokens, int64_t batchSize, int64_t segmentLength);
  int64_t numSegments() const { return numSegments_; }
  int64_t batchSize() const { return batchSize_; }
  int64_t rowLength() const { return rowLength_; }
  /// Number of target tokens over all segments: batchSize * (rowLength - 1).
  int64_t numTargets() const { return batchSize_ * (rowLength_ - 1); }
  struct Segment {
    torch::Tensor inputs;  ///< int64 [B, len]
    torch::Tensor targets; ///< int64 [B, len]
  };
  Segment segment(int64_t index) const;

private:
  torch::Tensor rows_; ///< int32 [B, rowLength], a view
  int64_t batchSize_, segmentLength_, rowLength_, numSegments_;
};

} // namespace fwp::lm
