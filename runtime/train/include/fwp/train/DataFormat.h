//===- DataFormat.h - Shared pieces of the task data files -----*- C++ -*-===//
//
// Every task data file is UTF-8 text: a header line
//   # fwp-<task> v1 key=value key=value ...
// followed by one example per line. Readers report problems as
// fwp::Error("<file>:<line>: <what>"). Writers go through a temporary file
// and a rename, so a data file is either complete or absent.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/Layer.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fwp::train {

/// A fixed token <-> id table. Id 0 is the first token given.
class Vocab {
public:
  Vocab() = default;
  explicit Vocab(std::vector<std::string> tokens);
  /// -1 for a token not in the table.
  int32_t find(const std::string &token) const;
  const std::string &token(int32_t id) const { return tokens_.at(id); }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  const std::vector<std::string> &tokens() const { return tokens_; }

private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
};

/// The first line of a data file: "# <format> <key>=<value> ...".
struct DataHeader {
  std::string format; ///< e.g. "fwp-codeexec v1"
  std::vector<std::pair<std::string, std::string>> fields;

  /// The value of `key`, or "" when absent.
  std::string get(const std::string &key) const;
  std::string line() const;
  /// Parses `text` (line 1 of `file`); throws fwp::Error naming file:1.
  static DataHeader parse(const std::string &text, const std::string &file,
                          const std::string &expectedFormat);
};

/// Tokens separated by single spaces; an empty field (double space, leading
/// or trailing space) is reported as an error by the caller.
std::vector<std::string> splitOnSpace(const std::string &text);

/// "<file>:<line>: <message>" as an fwp::Error.
Error lineError(const std::string &file, int64_t line,
                const std::string &message);

/// Atomic, durable writes: the runtime's one implementation (AtomicFile.h).
using fwp::writeFileAtomically;

/// Reads every line of `path` (without '\n'; a trailing '\r' is an error the
/// caller sees as part of the line). Throws fwp::Error if it cannot be read.
std::vector<std::string> readLines(const std::filesystem::path &path);

/// One training/evaluation sequence: input token ids and, per position, the
/// target class or -1 where nothing is scored.
struct SequenceExample {
  std::vector<int32_t> input;
  std::vector<int32_t> target;
};

} // namespace fwp::train
