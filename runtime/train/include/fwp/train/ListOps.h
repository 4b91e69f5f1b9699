//===- ListOps.h - Sequential ListOps (Nangia & Bowman 2018) ---*- C++ -*-===//
//
// Prefix expressions over the digits 0-9 written as a token sequence:
//   [MAX 2 9 [MIN 4 7 ] 0 ]   ->  9
// Operators: MIN, MAX, FIRST (the paper's set), MED and SM (sum modulo 10)
// optionally. A causal model reads the tokens and classifies the value (10
// classes) at the last token. The depth of an expression is the nesting of
// its operators: "[MAX 1 2 ]" has depth 1.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/train/DataFormat.h"
#include "fwp/train/Random.h"

#include <string>
#include <vector>

namespace fwp::train::listops {

/// The operator names as written in files and configs (the token is "[" + name).
const std::vector<std::string> &operatorNames(); // MIN MAX FIRST MED SM

struct GeneratorOptions {
  int depth = 10;   ///< exact operator nesting of every expression
  int maxArgs = 5;  ///< each operator takes 2..maxArgs arguments
  std::vector<std::string> operators = {"MIN", "MAX", "FIRST"};
  /// NYU's sampler: below the root an argument is a digit with this
  /// probability, else a nested operator.
  double valueProbability = 0.75;
  int maxLength = 0; ///< reject expressions with more tokens; 0: no limit
};

/// Draws expressions with NYU's recursive sampler and keeps the first whose
/// depth is exactly options.depth (and whose length fits). Throws fwp::Error
/// if that does not happen within a large number of draws.
std::vector<std::string> generate(const GeneratorOptions &options, Rng &rng);

struct ExpressionError : std::runtime_error {
  ExpressionError(size_t token, const std::string &message)
      : std::runtime_error(message), token(token) {}
  size_t token;
};

struct Evaluation {
  int value = 0;
  int depth = 0;
  int minArgs = 0; ///< fewest arguments of any operator
  int maxArgs = 0; ///< most arguments of any operator
  std::vector<std::string> operatorsUsed;
};

/// Evaluates one expression; ExpressionError names the bad token (an unknown
/// token, a digit outside any operator, an operator without arguments,
/// unbalanced brackets, tokens after the end).
Evaluation evaluate(const std::vector<std::string> &tokens);

/// Input tokens: id 0 "<pad>", then the digits, "]" and every operator.
const Vocab &inputVocab();
constexpr int kNumClasses = 10;

struct Example {
  int label = 0;
  std::vector<std::string> tokens;
};

struct FileContents {
  DataHeader header;
  std::vector<Example> examples;
};

/// File format (docs/training.md): header
///   # fwp-listops v1 depth=10 max_args=5 operators=MIN,MAX,FIRST max_length=0 seed=1 split=train count=10000
/// then "<label><TAB><tokens>" per line. read() re-evaluates every line and
/// checks it against the header; errors are fwp::Error("<file>:<line>: ...").
void write(const std::filesystem::path &path, const DataHeader &header,
           const std::vector<Example> &examples);
FileContents read(const std::filesystem::path &path);

/// Input ids; the target is the label at the last token, -1 elsewhere.
SequenceExample encode(const Example &example);

} // namespace fwp::train::listops
