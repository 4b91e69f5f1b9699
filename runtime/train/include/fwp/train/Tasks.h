//===- Tasks.h - Task data sets on disk and in memory ----------*- C++ -*-===//
//
// A DataSpec says which data set a run uses ([data] in the config): task,
// folder, seed, split sizes and the generator's options. ensureData()
// generates <dir>/{train,valid,test}.txt when they are missing
// (deterministically from the seed) and checks the headers of existing files
// against the spec, so one training command works on a fresh machine and
// never trains on stale data.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/train/CodeExec.h"
#include "fwp/train/Config.h"
#include "fwp/train/DataFormat.h"
#include "fwp/train/ListOps.h"

#include <array>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

namespace fwp::train {

struct DataSpec {
  std::string task = "codeexec"; ///< "codeexec" or "listops"
  std::filesystem::path dir;
  uint64_t seed = 1;
  std::array<int64_t, 3> sizes = {10000, 1000, 1000}; ///< train, valid, test
  codeexec::GeneratorOptions codeexec;
  listops::GeneratorOptions listops;

  /// The header a file of `split` ("train", "valid", "test") must carry.
  DataHeader header(const std::string &split) const;
  std::filesystem::path file(const std::string &split) const;
};

const std::array<std::string, 3> &splitNames();

/// Reads [data] (task, dir, seed, train, valid, test and the task's options:
/// codeexec: vars, statements, max_constant; listops: depth, max_args,
/// operators, max_length).
DataSpec dataSpecFromConfig(const Config &config);

/// Generates all three splits of `spec` in memory (train first; valid and
/// test skip any sequence already drawn, so the splits are disjoint) and
/// writes them atomically. `log` (may be null) gets one line per file.
void generateData(const DataSpec &spec, std::ostream *log);

/// Generates the files when none exists; some missing is an error (the
/// others are never overwritten unasked); otherwise verifies the headers.
void ensureData(const DataSpec &spec, std::ostream *log);

struct TaskData {
  std::string task;
  Vocab input;
  Vocab output;           ///< class names
  int32_t blankClass = -1; ///< codeexec: the class of "_"; listops: none
  std::vector<SequenceExample> train, valid, test;

  const std::vector<SequenceExample> &split(const std::string &name) const;
  std::vector<SequenceExample> &split(const std::string &name);
};

/// Vocabularies and classes of a task without loading any data.
TaskData describeTask(const std::string &task);

/// ensureData + read + encode. `splits` limits what is read (e.g. {"test"}).
TaskData loadTaskData(const DataSpec &spec, std::ostream *log,
                      const std::vector<std::string> &splits = {"train", "valid",
                                                                "test"});

} // namespace fwp::train
