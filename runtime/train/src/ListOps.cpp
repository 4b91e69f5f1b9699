//===- ListOps.cpp - Sequential ListOps generator, evaluator and files ---===//

#include "fwp/train/ListOps.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <sstream>

namespace fwp::train::listops {

const std::vector<std::string> &operatorNames() {
  static const std::vector<std::string> names = {"MIN", "MAX", "FIRST", "MED",
                                                 "SM"};
  return names;
}

namespace {

int applyOperator(const std::string &name, std::vector<int> args) {
  if (name == "MIN")
    return *std::min_element(args.begin(), args.end());
  if (name == "MAX")
    return *std::max_element(args.begin(), args.end());
  if (name == "FIRST")
    return args.front();
  if (name == "SM")
    return std::accumulate(args.begin(), args.end(), 0) % 10;
  // MED: the median; for an even count the mean of the two middle values
  // rounded down (NYU's int(np.median(...)) on non-negative values).
  std::sort(args.begin(), args.end());
  size_t n = args.size();
  return n % 2 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
}

/// One draw of NYU's recursive sampler. Returns false as soon as the
/// expression nests deeper than `limit` (it would be rejected anyway).
bool sampleTree(const GeneratorOptions &options, int level, int limit, Rng &rng,
                std::vector<std::string> &tokens, int &depth) {
  if (level > 1 && rng.uniform01() < options.valueProbability) {
    tokens.push_back(std::to_string(rng.uniformInt(0, 9)));
    return true;
  }
  if (level > limit)
    return false;
  depth = std::max(depth, level);
  tokens.push_back(
      "[" + options.operators[rng.uniformInt(0, options.operators.size() - 1)]);
  int args = static_cast<int>(rng.uniformInt(2, options.maxArgs));
  for (int i = 0; i < args; ++i)
    if (!sampleTree(options, level + 1, limit, rng, tokens, depth))
      return false;
  tokens.push_back("]");
  return true;
}

} // namespace

std::vector<std::string> generate(const GeneratorOptions &options, Rng &rng) {
  if (options.depth < 1)
    throw Error("listops: depth must be at least 1");
  if (options.maxArgs < 2)
    throw Error("listops: max_args must be at least 2");
  if (options.operators.empty())
    throw Error("listops: no operators given");
  for (const auto &op : options.operators)
    if (std::find(operatorNames().begin(), operatorNames().end(), op) ==
        operatorNames().end())
      throw Error("listops: unknown operator '" + op +
                  "' (known: MIN MAX FIRST MED SM)");
  if (!(options.valueProbability > 0 && options.valueProbability < 1))
    throw Error("listops: value probability must be in (0, 1)");
  const int64_t maxDraws = 10'000'000;
  std::vector<std::string> tokens;
  for (int64_t draw = 0; draw < maxDraws; ++draw) {
    tokens.clear();
    int depth = 0;
    if (!sampleTree(options, 1, options.depth, rng, tokens, depth))
      continue;
    if (depth != options.depth)
      continue;
    if (options.maxLength > 0 &&
        static_cast<int64_t>(tokens.size()) > options.maxLength)
      continue;
    return tokens;
  }
  throw Error("listops: no expression of depth " + std::to_string(options.depth) +
              (options.maxLength > 0
                   ? " and at most " + std::to_string(options.maxLength) + " tokens"
                   : std::string()) +
              " in " + std::to_string(maxDraws) + " draws; relax the options");
}

Evaluation evaluate(const std::vector<std::string> &tokens) {
  struct Frame {
    std::string op;
    std::vector<int> args;
  };
  std::vector<Frame> stack;
  Evaluation result;
  std::optional<int> value;
  result.minArgs = 1 << 30;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string &token = tokens[i];
    if (value)
      throw ExpressionError(i, "token after the end of the expression");
    if (token.size() > 1 && token[0] == '[') {
      std::string op = token.substr(1);
      if (std::find(operatorNames().begin(), operatorNames().end(), op) ==
          operatorNames().end())
        throw ExpressionError(i, "unknown operator '" + token + "'");
      if (std::find(result.operatorsUsed.begin(), result.operatorsUsed.end(),
                    op) == result.operatorsUsed.end())
        result.operatorsUsed.push_back(op);
      stack.push_back({op, {}});
      result.depth = std::max<int>(result.depth, stack.size());
    } else if (token == "]") {
      if (stack.empty())
        throw ExpressionError(i, "']' without an open operator");
      Frame frame = std::move(stack.back());
      stack.pop_back();
      if (frame.args.empty())
        throw ExpressionError(i, "operator '[" + frame.op + "' has no arguments");
      int n = static_cast<int>(frame.args.size());
      result.minArgs = std::min(result.minArgs, n);
      result.maxArgs = std::max(result.maxArgs, n);
      int v = applyOperator(frame.op, std::move(frame.args));
      if (stack.empty())
        value = v;
      else
        stack.back().args.push_back(v);
    } else if (token.size() == 1 && token[0] >= '0' && token[0] <= '9') {
      if (stack.empty())
        throw ExpressionError(i, "digit '" + token + "' outside any operator");
      stack.back().args.push_back(token[0] - '0');
    } else {
      throw ExpressionError(i, "unknown token '" + token + "'");
    }
  }
  if (!value)
    throw ExpressionError(tokens.size(),
                          stack.empty() ? "empty expression"
                                        : "the expression ends with " +
                                              std::to_string(stack.size()) +
                                              " operator(s) still open");
  result.value = *value;
  return result;
}

const Vocab &inputVocab() {
  static const Vocab vocab = [] {
    std::vector<std::string> tokens = {"<pad>"};
    for (int d = 0; d <= 9; ++d)
      tokens.push_back(std::to_string(d));
    tokens.push_back("]");
    for (const auto &op : operatorNames())
      tokens.push_back("[" + op);
    return Vocab(std::move(tokens));
  }();
  return vocab;
}

namespace {

int headerInt(const DataHeader &header, const std::string &key,
              const std::string &file) {
  std::string text = header.get(key);
  try {
    size_t used = 0;
    int value = std::stoi(text, &used);
    if (used == text.size())
      return value;
  } catch (const std::exception &) {
  }
  throw lineError(file, 1, "header field '" + key + "' must be an integer, got '" +
                               text + "'");
}

std::vector<std::string> splitComma(const std::string &text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ','))
    parts.push_back(part);
  return parts;
}

} // namespace

void write(const std::filesystem::path &path, const DataHeader &header,
           const std::vector<Example> &examples) {
  writeFileAtomically(path, [&](std::ostream &out) {
    out << header.line() << '\n';
    for (const auto &example : examples) {
      out << example.label << '\t';
      for (size_t i = 0; i < example.tokens.size(); ++i)
        out << (i ? " " : "") << example.tokens[i];
      out << '\n';
    }
  });
}

FileContents read(const std::filesystem::path &path) {
  const std::string file = path.string();
  std::vector<std::string> lines = readLines(path);
  if (lines.empty())
    throw lineError(file, 1, "empty file (expected a '# fwp-listops v1' header)");
  FileContents contents;
  contents.header = DataHeader::parse(lines[0], file, "fwp-listops v1");
  const int depth = headerInt(contents.header, "depth", file);
  const int maxArgs = headerInt(contents.header, "max_args", file);
  const int maxLength = headerInt(contents.header, "max_length", file);
  const int count = headerInt(contents.header, "count", file);
  const std::vector<std::string> operators =
      splitComma(contents.header.get("operators"));
  for (const auto &op : operators)
    if (std::find(operatorNames().begin(), operatorNames().end(), op) ==
        operatorNames().end())
      throw lineError(file, 1, "header names unknown operator '" + op + "'");

  for (size_t i = 1; i < lines.size(); ++i) {
    const int64_t lineNo = static_cast<int64_t>(i) + 1;
    const std::string &line = lines[i];
    auto tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos)
      throw lineError(file, lineNo,
                      "expected exactly two tab-separated fields (label, tokens)");
    std::string label = line.substr(0, tab);
    if (label.size() != 1 || label[0] < '0' || label[0] > '9')
      throw lineError(file, lineNo, "label '" + label + "' is not a digit 0-9");
    Example example;
    example.label = label[0] - '0';
    example.tokens = splitOnSpace(line.substr(tab + 1));
    for (size_t k = 0; k < example.tokens.size(); ++k)
      if (example.tokens[k].empty())
        throw lineError(file, lineNo,
                        "empty token at position " + std::to_string(k + 1) +
                            " (tokens are separated by single spaces)");
    Evaluation evaluation;
    try {
      evaluation = evaluate(example.tokens);
    } catch (const ExpressionError &e) {
      std::string where = e.token < example.tokens.size()
                              ? "token " + std::to_string(e.token + 1) + " ('" +
                                    example.tokens[e.token] + "')"
                              : "end of expression";
      throw lineError(file, lineNo, where + ": " + e.what());
    }
    if (evaluation.value != example.label)
      throw lineError(file, lineNo,
                      "label " + label + " but the expression evaluates to " +
                          std::to_string(evaluation.value));
    if (evaluation.depth != depth)
      throw lineError(file, lineNo,
                      "expression depth " + std::to_string(evaluation.depth) +
                          ", the header says depth=" + std::to_string(depth));
    if (evaluation.maxArgs > maxArgs)
      throw lineError(file, lineNo,
                      "an operator has " + std::to_string(evaluation.maxArgs) +
                          " arguments, the header says max_args=" +
                          std::to_string(maxArgs));
    if (maxLength > 0 && static_cast<int64_t>(example.tokens.size()) > maxLength)
      throw lineError(file, lineNo,
                      std::to_string(example.tokens.size()) +
                          " tokens, the header says max_length=" +
                          std::to_string(maxLength));
    for (const auto &op : evaluation.operatorsUsed)
      if (std::find(operators.begin(), operators.end(), op) == operators.end())
        throw lineError(file, lineNo,
                        "operator '[" + op + "' is not in the header's operators");
    contents.examples.push_back(std::move(example));
  }
  if (static_cast<int64_t>(contents.examples.size()) != count)
    throw lineError(file, 1, "header says count=" + std::to_string(count) +
                                 " but the file holds " +
                                 std::to_string(contents.examples.size()) +
                                 " expressions");
  return contents;
}

SequenceExample encode(const Example &example) {
  SequenceExample encoded;
  encoded.input.reserve(example.tokens.size());
  for (const auto &token : example.tokens) {
    int32_t id = inputVocab().find(token);
    if (id <= 0)
      throw Error("listops: token '" + token + "' is not in the input vocabulary");
    encoded.input.push_back(id);
  }
  encoded.target.assign(encoded.input.size(), -1);
  if (!encoded.target.empty())
    encoded.target.back() = example.label;
  return encoded;
}

} // namespace fwp::train::listops
