//===- Corpus.cpp - WikiText-style corpora and their mapped token cache -----===//

#include "fwp/lm/Corpus.h"

#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/Layer.h"
#include "fwp/runtime/Progress.h"

#include <algorithm>
#include <cstddef>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fwp::lm {
namespace {

std::string errnoText() { return std::strerror(errno); }

std::string joinPath(const std::string &dir, const std::string &name) {
  if (dir.empty())
    return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

uint64_t fnv1a(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

/// Byte length of the white-space character starting at p (0 if none), for
/// exactly the characters Python's str.isspace() accepts, in UTF-8.
size_t whitespaceLength(const unsigned char *p, const unsigned char *end) {
  unsigned char c = p[0];
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f))
    return 1;
  if (c < 0xc2)
    return 0;
  size_t left = static_cast<size_t>(end - p);
  if (c == 0xc2 && left >= 2 && (p[1] == 0x85 || p[1] == 0xa0))
    return 2; // U+0085, U+00A0
  if (left < 3)
    return 0;
  if (c == 0xe1 && p[1] == 0x9a && p[2] == 0x80)
    return 3; // U+1680
  if (c == 0xe2 && p[1] == 0x80 &&
      ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))
    return 3; // U+2000..U+200A, U+2028, U+2029, U+202F
  if (c == 0xe2 && p[1] == 0x81 && p[2] == 0x9f)
    return 3; // U+205F
  if (c == 0xe3 && p[1] == 0x80 && p[2] == 0x80)
    return 3; // U+3000
  return 0;
}

/// Offset of the first byte that is not well-formed UTF-8 (as Python's strict
/// decoder sees it), or npos. NUL bytes are rejected too: they mean a binary file.
size_t firstBadUtf8(std::string_view text) {
  const auto *s = reinterpret_cast<const unsigned char *>(text.data());
  size_t n = text.size(), i = 0;
  auto cont = [&](size_t k) { return i + k < n && (s[i + k] & 0xc0) == 0x80; };
  while (i < n) {
    unsigned char c = s[i];
    if (c == 0)
      return i;
    if (c < 0x80) {
      ++i;
    } else if (c >= 0xc2 && c <= 0xdf) {
      if (!cont(1))
        return i;
      i += 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      if (!cont(1) || !cont(2))
        return i;
      if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f))
        return i; // overlong or surrogate
      i += 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      if (!cont(1) || !cont(2) || !cont(3))
        return i;
      if ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
        return i; // overlong or beyond U+10FFFF
      i += 4;
    } else {
      return i;
    }
  }
  return std::string_view::npos;
}

/// A file descriptor that closes itself.
class FileHandle {
public:
  FileHandle() = default;
  explicit FileHandle(int fd) : fd_(fd) {}
  FileHandle(const FileHandle &) = delete;
  FileHandle &operator=(const FileHandle &) = delete;
  FileHandle(FileHandle &&other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileHandle &operator=(FileHandle &&other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~FileHandle() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

private:
  int fd_ = -1;
};

/// mkdir -p: creates `dir` and its missing parents.
void makeDirectories(const std::string &dir) {
  if (dir.empty())
    return;
  for (size_t at = 1; at <= dir.size(); ++at) {
    if (at < dir.size() && dir[at] != '/')
      continue;
    const std::string prefix = dir.substr(0, at);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST)
      throw Error("cannot create cache folder " + prefix + ": " + errnoText());
  }
}

CorpusFileInfo statFile(const std::string &path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error("cannot read corpus file " + path + ": " + errnoText());
  if (!S_ISREG(st.st_mode))
    throw Error("corpus file " + path + " is not a regular file");
  CorpusFileInfo info;
  info.path = path;
  info.size = static_cast<uint64_t>(st.st_size);
  info.mtimeNs = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000ll + st.st_mtim.tv_nsec;
  return info;
}

/// Streams a text file line by line (terminators \n, \r\n and \r, as Python's
/// universal newlines), hashing every byte it reads.
class LineReader {
public:
  explicit LineReader(std::string path) : path_(std::move(path)), buffer_(1 << 20) {
    fd_ = FileHandle(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_)
      throw Error("cannot open corpus file " + path_ + ": " + errnoText());
#ifdef POSIX_FADV_SEQUENTIAL
    ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  }

  /// The next line without its terminator; false at the end of the file.
  bool next(std::string_view &line) {
    for (;;) {
      if (skipLf_ && begin_ < end_) {
        if (buffer_[begin_] == '\n')
          ++begin_;
        skipLf_ = false;
      }
      size_t scan = begin_;
      while (scan < end_ && buffer_[scan] != '\n' && buffer_[scan] != '\r')
        ++scan;
      if (scan < end_) {
        line = std::string_view(buffer_.data() + begin_, scan - begin_);
        skipLf_ = buffer_[scan] == '\r';
        begin_ = scan + 1;
        ++lineNumber_;
        return true;
      }
      if (eof_) {
        if (begin_ == end_)
          return false;
        line = std::string_view(buffer_.data() + begin_, end_ - begin_);
        begin_ = end_;
        ++lineNumber_;
        return true;
      }
      refill();
    }
  }

  int64_t lineNumber() const { return lineNumber_; }
  uint64_t hash() const { return hash_.digest(); }
  uint64_t bytesRead() const { return bytesRead_; }
  const std::string &path() const { return path_; }

private:
  void refill() {
    // Keep the unfinished line at the front; grow when one line fills the buffer.
    size_t kept = end_ - begin_;
    if (begin_ > 0 && kept > 0)
      std::memmove(buffer_.data(), buffer_.data() + begin_, kept);
    begin_ = 0;
    end_ = kept;
    if (end_ == buffer_.size())
      buffer_.resize(buffer_.size() * 2);
    ssize_t got;
    do {
      got = ::read(fd_.get(), buffer_.data() + end_, buffer_.size() - end_);
    } while (got < 0 && errno == EINTR);
    if (got < 0)
      throw Error("cannot read corpus file " + path_ + ": " + errnoText());
    if (got == 0) {
      eof_ = true;
      return;
    }
    hash_.update(buffer_.data() + end_, static_cast<size_t>(got));
    bytesRead_ += static_cast<uint64_t>(got);
    end_ += static_cast<size_t>(got);
  }

  std::string path_;
  FileHandle fd_;
  std::vector<char> buffer_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false, skipLf_ = false;
  int64_t lineNumber_ = 0;
  ContentHash hash_;
  uint64_t bytesRead_ = 0;
};

uint64_t hashWholeFile(const std::string &path) {
  FileHandle fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd)
    throw Error("cannot open corpus file " + path + ": " + errnoText());
  std::vector<char> buffer(1 << 20);
  ContentHash hash;
  for (;;) {
    ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      throw Error("cannot read corpus file " + path + ": " + errnoText());
    if (got == 0)
      break;
    hash.update(buffer.data(), static_cast<size_t>(got));
  }
  return hash.digest();
}

/// Calls emit(token) for every white-space separated token of `line`.
template <typename Emit> void forEachToken(std::string_view line, Emit &&emit) {
  const auto *p = reinterpret_cast<const unsigned char *>(line.data());
  const auto *end = p + line.size();
  while (p < end) {
    size_t ws = whitespaceLength(p, end);
    if (ws) {
      p += ws;
      continue;
    }
    const auto *start = p;
    while (p < end && !whitespaceLength(p, end))
      ++p;
    emit(std::string_view(reinterpret_cast<const char *>(start), static_cast<size_t>(p - start)));
  }
}

/// Validates one line of `reader` and calls emit(token) per token.
template <typename Emit>
void tokeniseLine(const LineReader &reader, std::string_view line, Emit &&emit) {
  size_t bad = firstBadUtf8(line);
  if (bad != std::string_view::npos)
    throw Error(reader.path() + ":" + std::to_string(reader.lineNumber()) + ": " +
                (line[bad] == '\0' ? "NUL byte (binary file?)" : "invalid UTF-8") +
                " at byte " + std::to_string(bad + 1) + " of the line");
  forEachToken(line, emit);
}

/// Symbols by first occurrence with their counts; the strings live in an arena
/// so that 100M lookups allocate nothing.
class SymbolTable {
public:
  SymbolTable() : slots_(1 << 16, -1) {}

  int32_t intern(std::string_view symbol) {
    size_t mask = slots_.size() - 1;
    size_t slot = fnv1a(symbol) & mask;
    while (slots_[slot] >= 0) {
      if (symbols_[static_cast<size_t>(slots_[slot])] == symbol)
        return slots_[slot];
      slot = (slot + 1) & mask;
    }
    if (symbols_.size() >= static_cast<size_t>(INT32_MAX))
      throw Error("vocabulary exceeds 2^31 symbols");
    auto id = static_cast<int32_t>(symbols_.size());
    symbols_.push_back(store(symbol));
    counts_.push_back(0);
    slots_[slot] = id;
    if (symbols_.size() * 2 > slots_.size())
      grow();
    return id;
  }

  std::vector<std::string_view> symbols_;
  std::vector<int64_t> counts_;

private:
  std::string_view store(std::string_view symbol) {
    if (arena_.empty() || arenaUsed_ + symbol.size() > arenaChunk_) {
      arenaChunk_ = std::max<size_t>(1 << 20, symbol.size());
      arena_.push_back(std::make_unique<char[]>(arenaChunk_));
      arenaUsed_ = 0;
    }
    char *dst = arena_.back().get() + arenaUsed_;
    std::memcpy(dst, symbol.data(), symbol.size());
    arenaUsed_ += symbol.size();
    return {dst, symbol.size()};
  }

  void grow() {
    std::vector<int32_t> bigger(slots_.size() * 2, -1);
    size_t mask = bigger.size() - 1;
    for (size_t id = 0; id < symbols_.size(); ++id) {
      size_t slot = fnv1a(symbols_[id]) & mask;
      while (bigger[slot] >= 0)
        slot = (slot + 1) & mask;
      bigger[slot] = static_cast<int32_t>(id);
    }
    slots_.swap(bigger);
  }

  std::vector<int32_t> slots_;
  std::vector<std::unique_ptr<char[]>> arena_;
  size_t arenaChunk_ = 0, arenaUsed_ = 0;
};

// ---- the cache file ---------------------------------------------------------

constexpr char kMagic[8] = {'F', 'W', 'P', 'L', 'M', 'C', 'A', 'C'};
constexpr uint32_t kFormatVersion = 2;
constexpr uint64_t kByteOrderMark = 0x0102030405060708ull;

struct FileKey {
  uint64_t size;
  uint64_t hash;
  int64_t mtimeNs;
};

struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t skipEmptyLines;
  uint64_t byteOrder;
  uint64_t unknownSymbolHash;
  FileKey files[3];
  uint64_t vocabSize;
  uint64_t tokenOffset[3];
  uint64_t tokenCount[3];
  uint64_t vocabOffset; ///< vocabSize times (uint32 length, bytes)
  uint64_t vocabBytes;
  uint64_t countsOffset; ///< int64[vocabSize], 8-aligned
  uint64_t fileSize;
  uint64_t payloadHash; ///< of every byte after the header
  uint64_t headerHash; ///< of every byte above
};

uint64_t headerHash(const CacheHeader &header) {
  ContentHash hash;
  hash.update(&header, offsetof(CacheHeader, headerHash));
  return hash.digest();
}

uint64_t align8(uint64_t offset) { return (offset + 7) & ~uint64_t(7); }

/// Sequential writes to the cache with pwrite-based patching of earlier
/// bytes, in fwp's atomic file writer: the cache appears only on commit().
class CacheWriter {
public:
  explicit CacheWriter(std::string path) : path_(std::move(path)), file_(path_) {
    buffer_.reserve(1 << 20);
  }

  void append(const void *data, size_t size) {
    const char *bytes = static_cast<const char *>(data);
    while (size > 0) {
      size_t room = buffer_.capacity() - buffer_.size();
      size_t take = std::min(room, size);
      buffer_.insert(buffer_.end(), bytes, bytes + take);
      bytes += take;
      size -= take;
      offset_ += take;
      if (buffer_.size() == buffer_.capacity())
        flush();
    }
  }
  void padTo8() {
    static const char zeros[8] = {};
    append(zeros, align8(offset_) - offset_);
  }
  uint64_t offset() const { return offset_; }

  void flush() {
    writeAt(flushed_, buffer_.data(), buffer_.size());
    flushed_ += buffer_.size();
    buffer_.clear();
  }
  void writeAt(uint64_t at, const void *data, size_t size) {
    const char *bytes = static_cast<const char *>(data);
    while (size > 0) {
      ssize_t put = ::pwrite(file_.fd(), bytes, size, static_cast<off_t>(at));
      if (put < 0 && errno == EINTR)
        continue;
      if (put <= 0)
        throw Error("cannot write corpus cache " + path_ + ": " + errnoText());
      bytes += put;
      size -= static_cast<size_t>(put);
      at += static_cast<uint64_t>(put);
    }
  }
  void readAt(uint64_t at, void *data, size_t size) {
    char *bytes = static_cast<char *>(data);
    while (size > 0) {
      ssize_t got = ::pread(file_.fd(), bytes, size, static_cast<off_t>(at));
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0)
        throw Error("cannot read back corpus cache " + path_ + ": " + errnoText());
      bytes += got;
      size -= static_cast<size_t>(got);
      at += static_cast<uint64_t>(got);
    }
  }
  /// ContentHash of the bytes [from, offset()) as written.
  uint64_t hashFrom(uint64_t from) {
    flush();
    ContentHash hash;
    std::vector<char> chunk(1 << 20);
    for (uint64_t at = from; at < offset_;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), offset_ - at));
      readAt(at, chunk.data(), n);
      hash.update(chunk.data(), n);
      at += n;
    }
    return hash.digest();
  }
  /// Makes the cache file (fsync, rename, folder fsync).
  void commit() {
    flush();
    file_.commit();
  }

private:
  std::string path_;
  AtomicFileWriter file_;
  std::vector<char> buffer_;
  uint64_t offset_ = 0, flushed_ = 0;
};

} // namespace

// ---- small public pieces ------------------------------------------------------

const char *splitName(Split split) {
  switch (split) {
  case Split::Train:
    return "train";
  case Split::Valid:
    return "valid";
  case Split::Test:
    return "test";
  }
  return "?";
}

Split parseSplit(const std::string &name) {
  if (name == "train")
    return Split::Train;
  if (name == "valid")
    return Split::Valid;
  if (name == "test")
    return Split::Test;
  throw Error("unknown split '" + name + "' (expected train, valid or test)");
}

std::string Corpus::textFileName(Split split) {
  return std::string("wiki.") + splitName(split) + ".tokens";
}

std::vector<std::string_view> splitTokens(std::string_view line) {
  std::vector<std::string_view> tokens;
  forEachToken(line, [&](std::string_view token) { tokens.push_back(token); });
  return tokens;
}

// ---- ContentHash: four 64-bit lanes over 32-byte stripes ----------------------

namespace {
constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ull;
uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
uint64_t load64(const unsigned char *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v; // little-endian hosts only; the cache records the byte order
}
uint64_t mixLane(uint64_t lane, uint64_t word) {
  return rotl(lane + word * kPrime2, 31) * kPrime1;
}
} // namespace

ContentHash::ContentHash()
    : lanes_{kPrime1 + kPrime2, kPrime2, 0, 0 - kPrime1} {}

void ContentHash::stripe(const unsigned char *p) {
  for (int i = 0; i < 4; ++i)
    lanes_[i] = mixLane(lanes_[i], load64(p + 8 * i));
}

void ContentHash::update(const void *data, size_t size) {
  const auto *p = static_cast<const unsigned char *>(data);
  total_ += size;
  if (pendingSize_ > 0) {
    size_t take = std::min(size, 32 - pendingSize_);
    std::memcpy(pending_ + pendingSize_, p, take);
    pendingSize_ += take;
    p += take;
    size -= take;
    if (pendingSize_ < 32)
      return;
    stripe(pending_);
    pendingSize_ = 0;
  }
  while (size >= 32) {
    stripe(p);
    p += 32;
    size -= 32;
  }
  std::memcpy(pending_, p, size);
  pendingSize_ = size;
}

uint64_t ContentHash::digest() const {
  uint64_t h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) + rotl(lanes_[3], 18);
  for (uint64_t lane : lanes_)
    h = (h ^ mixLane(0, lane)) * kPrime1 + kPrime3;
  h += total_;
  for (size_t i = 0; i < pendingSize_; ++i)
    h = rotl(h ^ (pending_[i] * kPrime3), 11) * kPrime1;
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

// ---- Vocabulary -----------------------------------------------------------------

Vocabulary::Vocabulary(std::vector<std::string> symbols, std::vector<int64_t> counts)
    : symbols_(std::move(symbols)), counts_(std::move(counts)) {
  if (counts_.size() != symbols_.size())
    throw Error("vocabulary: " + std::to_string(symbols_.size()) + " symbols but " +
                std::to_string(counts_.size()) + " counts");
  index();
}

void Vocabulary::index() {
  size_t slots = 16;
  while (slots < symbols_.size() * 2)
    slots *= 2;
  table_.assign(slots, -1);
  for (size_t id = 0; id < symbols_.size(); ++id) {
    size_t slot = fnv1a(symbols_[id]) & (slots - 1);
    while (table_[slot] >= 0) {
      if (symbols_[static_cast<size_t>(table_[slot])] == symbols_[id])
        throw Error("vocabulary: symbol '" + symbols_[id] + "' appears twice");
      slot = (slot + 1) & (slots - 1);
    }
    table_[slot] = static_cast<int32_t>(id);
  }
}

const std::string &Vocabulary::symbol(int64_t id) const {
  if (id < 0 || id >= size())
    throw Error("vocabulary: id " + std::to_string(id) + " out of range [0, " +
                std::to_string(size()) + ")");
  return symbols_[static_cast<size_t>(id)];
}

int64_t Vocabulary::count(int64_t id) const {
  symbol(id); // range check
  return counts_[static_cast<size_t>(id)];
}

int32_t Vocabulary::id(std::string_view symbol) const {
  if (table_.empty())
    return kAbsent;
  size_t mask = table_.size() - 1;
  size_t slot = fnv1a(symbol) & mask;
  while (table_[slot] >= 0) {
    if (symbols_[static_cast<size_t>(table_[slot])] == symbol)
      return table_[slot];
    slot = (slot + 1) & mask;
  }
  return kAbsent;
}

// ---- the mapped cache -----------------------------------------------------------

struct Corpus::Mapping {
  void *data = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (data != MAP_FAILED)
      ::munmap(data, size);
  }
  const unsigned char *bytes() const { return static_cast<const unsigned char *>(data); }
};

bool Corpus::loadCache(const CorpusOptions &options, bool hashesKnown, std::string &why) {
  auto mapping = std::make_shared<Mapping>();
  CacheHeader header{};
  {
    FileHandle fd(::open(cachePath_.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!fd) {
      why = "no cache file " + cachePath_;
    } else if (::fstat(fd.get(), &st) != 0 || static_cast<size_t>(st.st_size) < sizeof(CacheHeader)) {
      why = "cache file " + cachePath_ + " is truncated";
    } else {
      mapping->size = static_cast<size_t>(st.st_size);
      mapping->data = ::mmap(nullptr, mapping->size, PROT_READ, MAP_SHARED, fd.get(), 0);
      if (mapping->data == MAP_FAILED)
        why = "cannot map cache file " + cachePath_ + ": " + errnoText();
    }
  }
  if (why.empty()) {
    std::memcpy(&header, mapping->bytes(), sizeof header);
    if (std::memcmp(header.magic, kMagic, sizeof kMagic) != 0 || header.byteOrder != kByteOrderMark ||
        headerHash(header) != header.headerHash)
      why = "cache file " + cachePath_ + " is not an fwp-lm cache";
    else if (header.version != kFormatVersion)
      why = "cache format version " + std::to_string(header.version) + " != " +
            std::to_string(kFormatVersion);
    else if (header.fileSize != mapping->size)
      why = "cache file " + cachePath_ + " is truncated";
    else if (header.skipEmptyLines != (options.skipEmptyLines ? 1u : 0u) ||
             header.unknownSymbolHash != fnv1a(options.unknownSymbol))
      why = "tokenisation options changed";
  }
  if (why.empty()) {
    // Every byte of the ids and the vocabulary: a damaged cache is rebuilt,
    // never trusted (~3 GB/s, like the text files' hashes below).
    ContentHash payload;
    payload.update(mapping->bytes() + sizeof header, mapping->size - sizeof header);
    if (payload.digest() != header.payloadHash)
      why = "cache file " + cachePath_ + " is corrupt (its contents do not match their hash)";
  }
  for (int s = 0; s < 3 && why.empty(); ++s) {
    CorpusFileInfo &info = files_[s];
    if (header.files[s].size != info.size) {
      why = info.path + " changed size";
      break;
    }
    if (!hashesKnown)
      info.hash = hashWholeFile(info.path);
    if (header.files[s].hash != info.hash)
      why = info.path + " changed content";
  }
  if (why.empty()) {
    // Parse the vocabulary; the token sections stay mapped.
    const unsigned char *base = mapping->bytes();
    auto inside = [&](uint64_t offset, uint64_t bytes) {
      return offset <= mapping->size && bytes <= mapping->size - offset;
    };
    bool ok = inside(header.vocabOffset, header.vocabBytes) &&
              inside(header.countsOffset, header.vocabSize * 8) && header.countsOffset % 8 == 0;
    for (int s = 0; s < 3 && ok; ++s)
      ok = inside(header.tokenOffset[s], header.tokenCount[s] * 4) && header.tokenOffset[s] % 4 == 0;
    std::vector<std::string> symbols;
    std::vector<int64_t> counts(header.vocabSize);
    if (ok) {
      symbols.reserve(header.vocabSize);
      uint64_t at = header.vocabOffset, end = header.vocabOffset + header.vocabBytes;
      for (uint64_t i = 0; i < header.vocabSize && ok; ++i) {
        uint32_t length;
        if (at + 4 > end) {
          ok = false;
          break;
        }
        std::memcpy(&length, base + at, 4);
        at += 4;
        if (length > end - at) {
          ok = false;
          break;
        }
        symbols.emplace_back(reinterpret_cast<const char *>(base + at), length);
        at += length;
      }
      if (ok)
        std::memcpy(counts.data(), base + header.countsOffset, header.vocabSize * 8);
    }
    if (!ok) {
      why = "cache file " + cachePath_ + " is corrupt";
    } else {
      vocab_ = std::make_shared<Vocabulary>(std::move(symbols), std::move(counts));
      mapping_ = mapping;
      for (int s = 0; s < 3; ++s) {
        tokenOffset_[s] = static_cast<int64_t>(header.tokenOffset[s]);
        tokenCount_[s] = static_cast<int64_t>(header.tokenCount[s]);
      }
      loadedFromCache_ = true;
      return true;
    }
  }
  return false;
}

/// Training files at least this large show a progress bar while cached.
constexpr int64_t kProgressMinMiB = 16;

Corpus Corpus::open(const CorpusOptions &options) {
  Corpus corpus;
  const std::string cacheDir = options.cacheDir.empty() ? options.dataDir : options.cacheDir;
  corpus.cachePath_ = joinPath(cacheDir, kCacheFileName);
  for (int s = 0; s < 3; ++s)
    corpus.files_[s] = statFile(joinPath(options.dataDir, textFileName(static_cast<Split>(s))));

  auto log = [&](const std::string &message) {
    if (options.verbose)
      std::cerr << "[fwp-lm] " << message << "\n";
  };

  std::string why;
  if (corpus.loadCache(options, /*hashesKnown=*/false, why)) {
    log("loaded " + corpus.cachePath_ + " (vocabulary " + std::to_string(corpus.vocab_->size()) + ")");
    return corpus;
  }

  // ---- build the cache ----
  log("building " + corpus.cachePath_ + ": " + why);
  corpus.rebuildReason_ = why;
  makeDirectories(cacheDir);
  CacheWriter writer(corpus.cachePath_);
  CacheHeader out{};
  std::memcpy(out.magic, kMagic, sizeof kMagic);
  out.version = kFormatVersion;
  out.skipEmptyLines = options.skipEmptyLines ? 1 : 0;
  out.byteOrder = kByteOrderMark;
  out.unknownSymbolHash = fnv1a(options.unknownSymbol);
  writer.append(&out, sizeof out); // patched at the end
  writer.padTo8();

  // Training split: ids by first occurrence, streamed to the cache; renumbered
  // by frequency afterwards in place.
  SymbolTable table;
  const int32_t eos = table.intern("<eos>");
  std::vector<int32_t> lineIds;
  out.tokenOffset[0] = writer.offset();
  {
    LineReader reader(corpus.files_[0].path);
    // Reading WikiText-103's 500 MB takes minutes: a progress bar (plain
    // lines off a terminal) counts the MiB of the training file read.
    const int64_t totalMiB = static_cast<int64_t>(corpus.files_[0].size >> 20);
    std::optional<fwp::Progress> progress;
    int64_t shownMiB = 0;
    if (options.verbose && totalMiB >= kProgressMinMiB) {
      fwp::ProgressOptions bar;
      bar.total = totalMiB;
      bar.lineEvery = std::max<int64_t>(1, totalMiB / 10);
      bar.label = "[fwp-lm] reading " + textFileName(Split::Train) + ", MiB";
      bar.unit = "MiB";
      progress.emplace(bar, std::cerr);
    }
    std::string_view line;
    uint64_t count = 0;
    while (reader.next(line)) {
      if (progress && static_cast<int64_t>(reader.bytesRead() >> 20) > shownMiB) {
        shownMiB = std::min(totalMiB, static_cast<int64_t>(reader.bytesRead() >> 20));
        progress->update(shownMiB, {});
      }
      lineIds.clear();
      tokeniseLine(reader, line, [&](std::string_view token) {
        int32_t id = table.intern(token);
        ++table.counts_[static_cast<size_t>(id)];
        lineIds.push_back(id);
      });
      if (options.skipEmptyLines && lineIds.empty())
        continue;
      lineIds.push_back(eos);
      ++table.counts_[static_cast<size_t>(eos)];
      writer.append(lineIds.data(), lineIds.size() * 4);
      count += lineIds.size();
    }
    if (progress)
      progress->finish();
    out.tokenCount[0] = count;
    corpus.files_[0].hash = reader.hash();
    if (count == 0)
      throw Error("corpus file " + corpus.files_[0].path + " holds no text");
  }
  writer.flush();

  // Final order: <eos> first, then by decreasing count, ties by first occurrence.
  const size_t vocabSize = table.symbols_.size();
  std::vector<int32_t> order(vocabSize);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin() + 1, order.end(), [&](int32_t a, int32_t b) {
    return table.counts_[static_cast<size_t>(a)] > table.counts_[static_cast<size_t>(b)];
  });
  std::vector<int32_t> finalId(vocabSize);
  for (size_t i = 0; i < vocabSize; ++i)
    finalId[static_cast<size_t>(order[i])] = static_cast<int32_t>(i);
  {
    std::vector<int32_t> chunk(1 << 18);
    for (uint64_t done = 0; done < out.tokenCount[0];) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), out.tokenCount[0] - done));
      uint64_t at = out.tokenOffset[0] + done * 4;
      writer.readAt(at, chunk.data(), n * 4);
      for (size_t i = 0; i < n; ++i)
        chunk[i] = finalId[static_cast<size_t>(chunk[i])];
      writer.writeAt(at, chunk.data(), n * 4);
      done += n;
    }
  }
  std::vector<std::string> symbols(vocabSize);
  std::vector<int64_t> counts(vocabSize);
  for (size_t i = 0; i < vocabSize; ++i) {
    symbols[i] = std::string(table.symbols_[static_cast<size_t>(order[i])]);
    counts[i] = table.counts_[static_cast<size_t>(order[i])];
  }
  table = SymbolTable(); // free the arena before the next splits
  auto vocab = std::make_shared<Vocabulary>(std::move(symbols), std::move(counts));

  // Validation and test splits: encoded with the final vocabulary.
  const int32_t unknown = vocab->id(options.unknownSymbol);
  for (int s = 1; s < 3; ++s) {
    out.tokenOffset[s] = writer.offset();
    LineReader reader(corpus.files_[s].path);
    std::string_view line;
    uint64_t count = 0;
    while (reader.next(line)) {
      lineIds.clear();
      tokeniseLine(reader, line, [&](std::string_view token) {
        int32_t id = vocab->id(token);
        if (id == Vocabulary::kAbsent) {
          if (unknown == Vocabulary::kAbsent)
            throw Error(reader.path() + ":" + std::to_string(reader.lineNumber()) + ": token '" +
                        std::string(token) + "' does not occur in " + corpus.files_[0].path +
                        " and the vocabulary has no '" + options.unknownSymbol + "'");
          id = unknown;
        }
        lineIds.push_back(id);
      });
      if (options.skipEmptyLines && lineIds.empty())
        continue;
      lineIds.push_back(Vocabulary::kEos);
      writer.append(lineIds.data(), lineIds.size() * 4);
      count += lineIds.size();
    }
    out.tokenCount[s] = count;
    corpus.files_[s].hash = reader.hash();
    if (count == 0)
      throw Error("corpus file " + corpus.files_[s].path + " holds no text");
  }

  // Vocabulary strings and counts.
  out.vocabSize = vocabSize;
  out.vocabOffset = writer.offset();
  for (int64_t id = 0; id < vocab->size(); ++id) {
    const std::string &symbol = vocab->symbol(id);
    auto length = static_cast<uint32_t>(symbol.size());
    writer.append(&length, 4);
    writer.append(symbol.data(), symbol.size());
  }
  out.vocabBytes = writer.offset() - out.vocabOffset;
  writer.padTo8();
  out.countsOffset = writer.offset();
  for (int64_t id = 0; id < vocab->size(); ++id) {
    int64_t count = vocab->count(id);
    writer.append(&count, 8);
  }
  out.fileSize = writer.offset();
  for (int s = 0; s < 3; ++s) {
    // A file that changed while we read it would poison the cache: re-check.
    CorpusFileInfo now = statFile(corpus.files_[s].path);
    if (now.size != corpus.files_[s].size || now.mtimeNs != corpus.files_[s].mtimeNs)
      throw Error("corpus file " + now.path + " changed while it was being read");
    out.files[s] = {corpus.files_[s].size, corpus.files_[s].hash, corpus.files_[s].mtimeNs};
  }
  out.payloadHash = writer.hashFrom(sizeof out);
  out.headerHash = headerHash(out);
  writer.writeAt(0, &out, sizeof out);
  writer.commit();

  // Map what we wrote, so that both paths hand out the same kind of tensors.
  std::string loadWhy;
  if (!corpus.loadCache(options, /*hashesKnown=*/true, loadWhy))
    throw Error("corpus cache " + corpus.cachePath_ + " was written but does not load: " + loadWhy);
  corpus.loadedFromCache_ = false;
  log("built " + corpus.cachePath_ + " (vocabulary " + std::to_string(corpus.vocab_->size()) +
      ", tokens train " + std::to_string(corpus.tokenCount_[0]) + " valid " +
      std::to_string(corpus.tokenCount_[1]) + " test " + std::to_string(corpus.tokenCount_[2]) + ")");
  return corpus;
}

const CorpusFileInfo &Corpus::fileInfo(Split split) const { return files_[static_cast<int>(split)]; }

int64_t Corpus::numTokens(Split split) const { return tokenCount_[static_cast<int>(split)]; }

torch::Tensor Corpus::tokens(Split split) const {
  int s = static_cast<int>(split);
  auto keepAlive = mapping_;
  void *data = const_cast<unsigned char *>(mapping_->bytes() + tokenOffset_[s]);
  return torch::from_blob(
      data, {tokenCount_[s]}, [keepAlive](void *) {}, torch::TensorOptions().dtype(torch::kInt32));
}

// ---- OrderedBatches -------------------------------------------------------------

OrderedBatches::OrderedBatches(torch::Tensor tokens, int64_t batchSize, int64_t segmentLength)
    : batchSize_(batchSize), segmentLength_(segmentLength) {
  if (tokens.dim() != 1)
    throw Error("OrderedBatches: tokens must be 1-D, got " + std::to_string(tokens.dim()) + "-D");
  if (batchSize < 1 || segmentLength < 1)
    throw Error("OrderedBatches: batch size and segment length must be >= 1");
  rowLength_ = tokens.size(0) / batchSize;
  if (rowLength_ < 2)
    throw Error("OrderedBatches: " + std::to_string(tokens.size(0)) + " tokens are too few for " +
                std::to_string(batchSize) + " rows of at least 2 tokens");
  rows_ = tokens.narrow(0, 0, rowLength_ * batchSize).view({batchSize, rowLength_});
  numSegments_ = (rowLength_ - 1 + segmentLength - 1) / segmentLength;
}

OrderedBatches::Segment OrderedBatches::segment(int64_t index) const {
  if (index < 0 || index >= numSegments_)
    throw Error("OrderedBatches: segment " + std::to_string(index) + " out of range [0, " +
                std::to_string(numSegments_) + ")");
  int64_t begin = index * segmentLength_;
  int64_t length = std::min(segmentLength_, rowLength_ - 1 - begin);
  return {rows_.narrow(1, begin, length).to(torch::kInt64),
          rows_.narrow(1, begin + 1, length).to(torch::kInt64)};
}

} // namespace fwp::lm
