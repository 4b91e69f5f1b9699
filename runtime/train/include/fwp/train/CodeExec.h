//===- CodeExec.h - The code execution task (Fan et al. 2020) --*- C++ -*-===//
//
// Programs are straight-line sequences of statements over the variables
// x y z a b (the first `vars` of them):
//   v = c ;   v ++ ;   v -- ;   print v ;   if v < c : S   if v > c : S
// where S is one non-conditional statement and c a constant. The model reads
// the program token by token and must emit, at the ";" of every *executed*
// print, the printed value; everywhere else the blank target "_".
// The interpreter below defines the targets; the generator only chooses
// statements.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/train/DataFormat.h"
#include "fwp/train/Random.h"

#include <string>
#include <vector>

namespace fwp::train::codeexec {

/// Values a variable may hold; the output vocabulary covers exactly these.
constexpr int kMinValue = -8;
constexpr int kMaxValue = 16;
constexpr int kMaxVars = 5;
/// The blank target (no print executed at this token).
inline const std::string kBlank = "_";

/// The variable names, in the order vars=3 / vars=5 take them.
const std::vector<std::string> &variableNames();

struct GeneratorOptions {
  int vars = 3;            ///< 1..5
  int statements = 100;    ///< statements per program (an "if" and its body count once)
  int maxConstant = 9;     ///< constants in assignments and conditions: 0..maxConstant
};

/// Draws one program. The first statement is an assignment, the last a
/// print; only assigned variables are read; an increment that would leave
/// [kMinValue, kMaxValue] is emitted as a decrement and vice versa (so the
/// value stays in range whether or not a guarding "if" executes it).
std::vector<std::string> generateProgram(const GeneratorOptions &options,
                                         Rng &rng);

/// Raised by run(): `token` is the 0-based index of the offending token.
struct ProgramError : std::runtime_error {
  ProgramError(size_t token, const std::string &message)
      : std::runtime_error(message), token(token) {}
  size_t token;
};

struct Execution {
  std::vector<std::string> targets; ///< one per token: kBlank or a value
  int statements = 0;               ///< top-level statements
};

/// Interprets a tokenised program over the first `vars` variable names.
/// Throws ProgramError on a syntax error, an unknown token, a read of a
/// variable never assigned, or a value outside [kMinValue, kMaxValue].
Execution run(const std::vector<std::string> &tokens, int vars);

/// Input tokens (id 0 is the padding token "<pad>") and output classes
/// (id 0 is kBlank, then kMinValue..kMaxValue).
const Vocab &inputVocab();
const Vocab &outputVocab();

struct Example {
  std::vector<std::string> tokens;
  std::vector<std::string> targets;
};

struct FileContents {
  DataHeader header;
  std::vector<Example> examples;
};

/// File format (docs/training.md): header
///   # fwp-codeexec v1 vars=3 statements=100 max_constant=9 seed=1 split=train count=10000
/// then one program per line: "<tokens><TAB><targets>", both space-separated,
/// as many targets as tokens. read() checks every line against the
/// interpreter and the header and throws fwp::Error("<file>:<line>: ...").
void write(const std::filesystem::path &path, const DataHeader &header,
           const std::vector<Example> &examples);
FileContents read(const std::filesystem::path &path);

SequenceExample encode(const Example &example);

} // namespace fwp::train::codeexec
