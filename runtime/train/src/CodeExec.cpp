//===- CodeExec.cpp - Generator, interpreter and files of code execution -===//

#include "fwp/train/CodeExec.h"

#include <algorithm>
#include <array>
#include <optional>

namespace fwp::train::codeexec {

const std::vector<std::string> &variableNames() {
  static const std::vector<std::string> names = {"x", "y", "z", "a", "b"};
  return names;
}

namespace {

enum class Simple { Assign = 0, Step = 1, Print = 2 };

/// Program state shared by the generator's statement choices.
struct GeneratorState {
  std::array<int, kMaxVars> value{};
  std::vector<int> assigned; // variable indices assigned so far, in order
  std::vector<std::string> tokens;
};

void emitSimple(Simple kind, bool executed, const GeneratorOptions &options,
                GeneratorState &state, Rng &rng) {
  const auto &names = variableNames();
  auto pickAssigned = [&] {
    return state.assigned[rng.uniformInt(0, state.assigned.size() - 1)];
  };
  switch (kind) {
  case Simple::Assign: {
    int var = static_cast<int>(rng.uniformInt(0, options.vars - 1));
    int constant = static_cast<int>(rng.uniformInt(0, options.maxConstant));
    state.tokens.insert(state.tokens.end(),
                        {names[var], "=", std::to_string(constant), ";"});
    if (executed) {
      state.value[var] = constant;
      if (std::find(state.assigned.begin(), state.assigned.end(), var) ==
          state.assigned.end())
        state.assigned.push_back(var);
    }
    return;
  }
  case Simple::Step: {
    int var = pickAssigned();
    bool up = rng.uniformInt(0, 1) == 1;
    // Turn a step that would leave the value range around; the current value
    // decides even when a false condition skips the statement.
    if (up && state.value[var] + 1 > kMaxValue)
      up = false;
    else if (!up && state.value[var] - 1 < kMinValue)
      up = true;
    state.tokens.insert(state.tokens.end(), {names[var], up ? "++" : "--", ";"});
    if (executed)
      state.value[var] += up ? 1 : -1;
    return;
  }
  case Simple::Print: {
    int var = pickAssigned();
    state.tokens.insert(state.tokens.end(), {"print", names[var], ";"});
    return;
  }
  }
}

} // namespace

std::vector<std::string> generateProgram(const GeneratorOptions &options,
                                         Rng &rng) {
  if (options.vars < 1 || options.vars > kMaxVars)
    throw Error("codeexec: vars must be in 1.." + std::to_string(kMaxVars) +
                ", got " + std::to_string(options.vars));
  if (options.statements < 1)
    throw Error("codeexec: statements must be positive");
  if (options.maxConstant < 0 || options.maxConstant > kMaxValue)
    throw Error("codeexec: max_constant must be in 0.." +
                std::to_string(kMaxValue));
  GeneratorState state;
  const auto &names = variableNames();
  for (int count = 0; count < options.statements; ++count) {
    // 0 assign, 1 step, 2 print, 3 conditional; the first statement defines a
    // variable and the last one prints.
    int kind = count == 0                        ? 0
               : count == options.statements - 1 ? 2
                                                 : static_cast<int>(rng.uniformInt(0, 3));
    if (kind < 3) {
      emitSimple(static_cast<Simple>(kind), true, options, state, rng);
      continue;
    }
    int var = state.assigned[rng.uniformInt(0, state.assigned.size() - 1)];
    bool less = rng.uniformInt(0, 1) == 0;
    int constant = static_cast<int>(rng.uniformInt(0, options.maxConstant));
    bool holds = less ? state.value[var] < constant : state.value[var] > constant;
    state.tokens.insert(state.tokens.end(), {"if", names[var], less ? "<" : ">",
                                             std::to_string(constant), ":"});
    emitSimple(static_cast<Simple>(rng.uniformInt(0, 2)), holds, options, state,
               rng);
  }
  return std::move(state.tokens);
}

namespace {

std::optional<int> parseInteger(const std::string &token) {
  size_t i = token.size() > 1 && token[0] == '-' ? 1 : 0;
  if (i == token.size() || token.size() - i > 6)
    return std::nullopt;
  for (size_t j = i; j < token.size(); ++j)
    if (token[j] < '0' || token[j] > '9')
      return std::nullopt;
  if (token.size() - i > 1 && token[i] == '0') // no leading zeros: one spelling per value
    return std::nullopt;
  if (token == "-0")
    return std::nullopt;
  return std::stoi(token);
}

class Interpreter {
public:
  Interpreter(const std::vector<std::string> &tokens, int vars)
      : tokens_(tokens), vars_(vars) {
    result_.targets.assign(tokens.size(), kBlank);
  }

  Execution run() {
    while (pos_ < tokens_.size()) {
      ++result_.statements;
      if (tokens_[pos_] == "if") {
        int var = variableAt(pos_ + 1);
        const std::string &op = at(pos_ + 2);
        if (op != "<" && op != ">")
          fail(pos_ + 2, "expected '<' or '>' after 'if " + tokens_[pos_ + 1] +
                             "', found '" + op + "'");
        int constant = constantAt(pos_ + 3);
        expect(pos_ + 4, ":");
        int value = read(var, pos_ + 1);
        bool holds = op == "<" ? value < constant : value > constant;
        pos_ += 5;
        if (pos_ < tokens_.size() && tokens_[pos_] == "if")
          fail(pos_, "the body of an 'if' must be one non-conditional statement");
        simple(holds);
      } else {
        simple(true);
      }
    }
    return std::move(result_);
  }

private:
  [[noreturn]] void fail(size_t token, const std::string &message) const {
    throw ProgramError(std::min(token, tokens_.size()), message);
  }

  const std::string &at(size_t i) const {
    if (i >= tokens_.size())
      fail(i, "the program ends inside a statement");
    return tokens_[i];
  }

  void expect(size_t i, const char *token) const {
    if (at(i) != token)
      fail(i, std::string("expected '") + token + "', found '" + tokens_[i] + "'");
  }

  int variableAt(size_t i) const {
    const std::string &token = at(i);
    const auto &names = variableNames();
    auto it = std::find(names.begin(), names.end(), token);
    if (it == names.end())
      fail(i, "expected a variable, found '" + token + "'");
    int var = static_cast<int>(it - names.begin());
    if (var >= vars_)
      fail(i, "variable '" + token + "' is not one of the first " +
                  std::to_string(vars_) + " variables");
    return var;
  }

  int constantAt(size_t i) const {
    const std::string &token = at(i);
    auto value = parseInteger(token);
    if (!value)
      fail(i, "expected an integer constant, found '" + token + "'");
    if (*value < kMinValue || *value > kMaxValue)
      fail(i, "constant " + token + " is outside [" + std::to_string(kMinValue) +
                  ", " + std::to_string(kMaxValue) + "]");
    return *value;
  }

  int read(int var, size_t token) const {
    if (!value_[var])
      fail(token, "variable '" + variableNames()[var] +
                      "' is read before it is assigned");
    return *value_[var];
  }

  void store(int var, int value, size_t token) {
    if (value < kMinValue || value > kMaxValue)
      fail(token, "value " + std::to_string(value) + " of '" +
                      variableNames()[var] + "' leaves [" +
                      std::to_string(kMinValue) + ", " +
                      std::to_string(kMaxValue) + "]");
    value_[var] = value;
  }

  /// One non-conditional statement at pos_; executes it when `execute`.
  void simple(bool execute) {
    const std::string &head = at(pos_);
    if (head == "print") {
      int var = variableAt(pos_ + 1);
      expect(pos_ + 2, ";");
      if (execute)
        result_.targets[pos_ + 2] = std::to_string(read(var, pos_ + 1));
      pos_ += 3;
      return;
    }
    if (head == "if")
      fail(pos_, "the body of an 'if' must be one non-conditional statement");
    int var = variableAt(pos_);
    const std::string &op = at(pos_ + 1);
    if (op == "=") {
      int constant = constantAt(pos_ + 2);
      expect(pos_ + 3, ";");
      if (execute)
        store(var, constant, pos_ + 2);
      pos_ += 4;
    } else if (op == "++" || op == "--") {
      expect(pos_ + 2, ";");
      if (execute)
        store(var, read(var, pos_) + (op == "++" ? 1 : -1), pos_ + 1);
      pos_ += 3;
    } else {
      fail(pos_ + 1, "expected '=', '++' or '--' after '" + head +
                         "', found '" + op + "'");
    }
  }

  const std::vector<std::string> &tokens_;
  int vars_;
  size_t pos_ = 0;
  std::array<std::optional<int>, kMaxVars> value_;
  Execution result_;
};

} // namespace

Execution run(const std::vector<std::string> &tokens, int vars) {
  if (vars < 1 || vars > kMaxVars)
    throw Error("codeexec: vars must be in 1.." + std::to_string(kMaxVars));
  return Interpreter(tokens, vars).run();
}

const Vocab &inputVocab() {
  static const Vocab vocab = [] {
    std::vector<std::string> tokens = {"<pad>"};
    for (const auto &name : variableNames())
      tokens.push_back(name);
    for (const char *t : {"=", "++", "--", ";", "print", "if", "<", ">", ":"})
      tokens.push_back(t);
    for (int v = kMinValue; v <= kMaxValue; ++v)
      tokens.push_back(std::to_string(v));
    return Vocab(std::move(tokens));
  }();
  return vocab;
}

const Vocab &outputVocab() {
  static const Vocab vocab = [] {
    std::vector<std::string> tokens = {kBlank};
    for (int v = kMinValue; v <= kMaxValue; ++v)
      tokens.push_back(std::to_string(v));
    return Vocab(std::move(tokens));
  }();
  return vocab;
}

namespace {

std::string join(const std::vector<std::string> &parts) {
  std::string text;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i)
      text += ' ';
    text += parts[i];
  }
  return text;
}

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

} // namespace

void write(const std::filesystem::path &path, const DataHeader &header,
           const std::vector<Example> &examples) {
  writeFileAtomically(path, [&](std::ostream &out) {
    out << header.line() << '\n';
    for (const auto &example : examples)
      out << join(example.tokens) << '\t' << join(example.targets) << '\n';
  });
}

FileContents read(const std::filesystem::path &path) {
  const std::string file = path.string();
  std::vector<std::string> lines = readLines(path);
  if (lines.empty())
    throw lineError(file, 1, "empty file (expected a '# fwp-codeexec v1' header)");
  FileContents contents;
  contents.header = DataHeader::parse(lines[0], file, "fwp-codeexec v1");
  const int vars = headerInt(contents.header, "vars", file);
  const int statements = headerInt(contents.header, "statements", file);
  const int count = headerInt(contents.header, "count", file);
  if (vars < 1 || vars > kMaxVars)
    throw lineError(file, 1, "header field 'vars' must be in 1.." +
                                 std::to_string(kMaxVars));

  for (size_t i = 1; i < lines.size(); ++i) {
    const int64_t lineNo = static_cast<int64_t>(i) + 1;
    const std::string &line = lines[i];
    auto tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos)
      throw lineError(file, lineNo,
                      "expected exactly two tab-separated fields (tokens, targets)");
    Example example;
    example.tokens = splitOnSpace(line.substr(0, tab));
    example.targets = splitOnSpace(line.substr(tab + 1));
    for (const auto *field : {&example.tokens, &example.targets})
      for (size_t k = 0; k < field->size(); ++k)
        if ((*field)[k].empty())
          throw lineError(file, lineNo,
                          std::string("empty ") +
                              (field == &example.tokens ? "token" : "target") +
                              " at position " + std::to_string(k + 1) +
                              " (fields are separated by single spaces)");
    if (example.tokens.size() != example.targets.size())
      throw lineError(file, lineNo,
                      std::to_string(example.tokens.size()) + " tokens but " +
                          std::to_string(example.targets.size()) + " targets");
    Execution execution;
    try {
      execution = run(example.tokens, vars);
    } catch (const ProgramError &e) {
      std::string where =
          e.token < example.tokens.size()
              ? "token " + std::to_string(e.token + 1) + " ('" +
                    example.tokens[e.token] + "')"
              : "end of program";
      throw lineError(file, lineNo, where + ": " + e.what());
    }
    if (execution.statements != statements)
      throw lineError(file, lineNo,
                      std::to_string(execution.statements) +
                          " statements, the header says statements=" +
                          std::to_string(statements));
    for (size_t k = 0; k < example.targets.size(); ++k)
      if (example.targets[k] != execution.targets[k])
        throw lineError(file, lineNo,
                        "target " + std::to_string(k + 1) + " is '" +
                            example.targets[k] + "' but the program gives '" +
                            execution.targets[k] + "'");
    contents.examples.push_back(std::move(example));
  }
  if (static_cast<int64_t>(contents.examples.size()) != count)
    throw lineError(file, 1, "header says count=" + std::to_string(count) +
                                 " but the file holds " +
                                 std::to_string(contents.examples.size()) +
                                 " programs");
  return contents;
}

SequenceExample encode(const Example &example) {
  SequenceExample encoded;
  encoded.input.reserve(example.tokens.size());
  encoded.target.reserve(example.targets.size());
  for (const auto &token : example.tokens) {
    int32_t id = inputVocab().find(token);
    if (id <= 0)
      throw Error("codeexec: token '" + token + "' is not in the input vocabulary");
    encoded.input.push_back(id);
  }
  for (const auto &target : example.targets) {
    int32_t id = outputVocab().find(target);
    if (id < 0)
      throw Error("codeexec: target '" + target +
                  "' is not in the output vocabulary");
    encoded.target.push_back(id);
  }
  return encoded;
}

} // namespace fwp::train::codeexec
