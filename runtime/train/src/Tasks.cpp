//===- Tasks.cpp - Task data sets on disk and in memory ------------------===//

#include "fwp/train/Tasks.h"

#include <algorithm>
#include <fstream>
#include <ostream>
#include <unordered_set>

namespace fwp::train {

const std::array<std::string, 3> &splitNames() {
  static const std::array<std::string, 3> names = {"train", "valid", "test"};
  return names;
}

namespace {

int splitIndex(const std::string &split) {
  for (int i = 0; i < 3; ++i)
    if (splitNames()[i] == split)
      return i;
  throw Error("unknown split '" + split + "' (expected train, valid or test)");
}

std::string joinComma(const std::vector<std::string> &parts) {
  std::string text;
  for (const auto &p : parts)
    text += (text.empty() ? "" : ",") + p;
  return text;
}

} // namespace

DataHeader DataSpec::header(const std::string &split) const {
  DataHeader header;
  const int64_t count = sizes[splitIndex(split)];
  if (task == "codeexec") {
    header.format = "fwp-codeexec v1";
    header.fields = {{"vars", std::to_string(codeexec.vars)},
                     {"statements", std::to_string(codeexec.statements)},
                     {"max_constant", std::to_string(codeexec.maxConstant)}};
  } else {
    header.format = "fwp-listops v1";
    header.fields = {{"depth", std::to_string(listops.depth)},
                     {"max_args", std::to_string(listops.maxArgs)},
                     {"operators", joinComma(listops.operators)},
                     {"max_length", std::to_string(listops.maxLength)}};
  }
  header.fields.emplace_back("seed", std::to_string(seed));
  header.fields.emplace_back("split", split);
  header.fields.emplace_back("count", std::to_string(count));
  return header;
}

std::filesystem::path DataSpec::file(const std::string &split) const {
  return dir / (split + ".txt");
}

DataSpec dataSpecFromConfig(const Config &config) {
  DataSpec spec;
  spec.task = config.getString("data.task");
  if (spec.task != "codeexec" && spec.task != "listops")
    throw Error(config.source() + ": data.task must be \"codeexec\" or \"listops\", got \"" +
                spec.task + "\"");
  spec.dir = config.getString("data.dir");
  int64_t seed = config.getInt("data.seed", 1);
  if (seed < 0)
    throw Error(config.source() + ": data.seed must be non-negative");
  spec.seed = static_cast<uint64_t>(seed);
  for (int i = 0; i < 3; ++i) {
    spec.sizes[i] = config.getInt("data." + splitNames()[i],
                                  i == 0 ? 10000 : 1000);
    if (spec.sizes[i] < 1)
      throw Error(config.source() + ": data." + splitNames()[i] +
                  " must be positive");
  }
  if (spec.task == "codeexec") {
    spec.codeexec.vars = static_cast<int>(config.getInt("data.vars", 3));
    spec.codeexec.statements = static_cast<int>(config.getInt("data.statements", 100));
    spec.codeexec.maxConstant = static_cast<int>(config.getInt("data.max_constant", 9));
    if (spec.codeexec.vars < 1 || spec.codeexec.vars > codeexec::kMaxVars)
      throw Error(config.source() + ": data.vars must be in 1..5");
    if (spec.codeexec.statements < 1)
      throw Error(config.source() + ": data.statements must be positive");
    if (spec.codeexec.maxConstant < 0 || spec.codeexec.maxConstant > codeexec::kMaxValue)
      throw Error(config.source() + ": data.max_constant must be in 0..16");
  } else {
    spec.listops.depth = static_cast<int>(config.getInt("data.depth", 10));
    spec.listops.maxArgs = static_cast<int>(config.getInt("data.max_args", 5));
    spec.listops.operators =
        config.getStrings("data.operators", spec.listops.operators);
    spec.listops.maxLength = static_cast<int>(config.getInt("data.max_length", 0));
    if (spec.listops.depth < 1 || spec.listops.depth > 40)
      throw Error(config.source() + ": data.depth must be in 1..40");
    if (spec.listops.maxArgs < 2)
      throw Error(config.source() + ": data.max_args must be at least 2");
    if (spec.listops.operators.empty())
      throw Error(config.source() + ": data.operators must not be empty");
    for (const auto &op : spec.listops.operators)
      if (std::find(listops::operatorNames().begin(), listops::operatorNames().end(),
                    op) == listops::operatorNames().end())
        throw Error(config.source() + ": data.operators: unknown operator \"" + op +
                    "\" (known: MIN MAX FIRST MED SM)");
  }
  return spec;
}

namespace {

std::string joinSpace(const std::vector<std::string> &tokens) {
  std::string text;
  for (const auto &t : tokens)
    text += (text.empty() ? "" : " ") + t;
  return text;
}

} // namespace

void generateData(const DataSpec &spec, std::ostream *log) {
  std::unordered_set<std::string> seen;
  for (int s = 0; s < 3; ++s) {
    const std::string &split = splitNames()[s];
    Rng rng(mixSeed(spec.seed, static_cast<uint64_t>(s)));
    const int64_t wanted = spec.sizes[s];
    const int64_t maxDraws = 100 * wanted + 1000;
    int64_t draws = 0;
    auto draw = [&]() {
      if (++draws > maxDraws)
        throw Error("data generation for " + spec.file(split).string() +
                    ": too many duplicate sequences; the task settings allow "
                    "too few distinct sequences for the requested sizes");
      return spec.task == "codeexec" ? codeexec::generateProgram(spec.codeexec, rng)
                                     : listops::generate(spec.listops, rng);
    };
    if (spec.task == "codeexec") {
      std::vector<codeexec::Example> examples;
      while (static_cast<int64_t>(examples.size()) < wanted) {
        std::vector<std::string> tokens = draw();
        if (!seen.insert(joinSpace(tokens)).second)
          continue;
        codeexec::Example example;
        example.targets = codeexec::run(tokens, spec.codeexec.vars).targets;
        example.tokens = std::move(tokens);
        examples.push_back(std::move(example));
      }
      codeexec::write(spec.file(split), spec.header(split), examples);
    } else {
      std::vector<listops::Example> examples;
      while (static_cast<int64_t>(examples.size()) < wanted) {
        std::vector<std::string> tokens = draw();
        if (!seen.insert(joinSpace(tokens)).second)
          continue;
        listops::Example example;
        example.label = listops::evaluate(tokens).value;
        example.tokens = std::move(tokens);
        examples.push_back(std::move(example));
      }
      listops::write(spec.file(split), spec.header(split), examples);
    }
    if (log)
      *log << "wrote " << spec.file(split).string() << " (" << wanted << " "
           << (spec.task == "codeexec" ? "programs" : "expressions") << ")\n";
  }
}

namespace {

/// Line 1 of `path`, or "" when the file is empty.
std::string firstLine(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path.string() + ": cannot open for reading");
  std::string line;
  std::getline(in, line);
  return line;
}

} // namespace

void ensureData(const DataSpec &spec, std::ostream *log) {
  std::vector<std::string> missing;
  for (const auto &split : splitNames())
    if (!std::filesystem::exists(spec.file(split)))
      missing.push_back(spec.file(split).string());
  // Some splits present, some not: never regenerate (and overwrite) the
  // ones that exist without being asked.
  if (!missing.empty() && missing.size() < splitNames().size()) {
    std::string list;
    for (const std::string &file : missing)
      list += (list.empty() ? "" : ", ") + file;
    throw Error("missing data split(s): " + list + "; the other splits of " + spec.dir.string() +
                " exist. Regenerate all of them with fwp-train gen-data --config <config> "
                "--force, or restore the missing files");
  }
  if (!missing.empty()) {
    if (log)
      *log << "generating " << spec.task << " data in " << spec.dir.string()
           << " (seed " << spec.seed << ")\n";
    generateData(spec, log);
    return;
  }
  for (const auto &split : splitNames()) {
    std::string expected = spec.header(split).line();
    std::string actual = firstLine(spec.file(split));
    if (actual != expected)
      throw Error(spec.file(split).string() + ":1: the header\n  " + actual +
                  "\ndoes not match the configuration, which asks for\n  " +
                  expected +
                  "\nremove the folder to regenerate it, or point data.dir elsewhere");
  }
}

TaskData describeTask(const std::string &task) {
  TaskData data;
  data.task = task;
  if (task == "codeexec") {
    data.input = codeexec::inputVocab();
    data.output = codeexec::outputVocab();
    data.blankClass = data.output.find(codeexec::kBlank);
  } else if (task == "listops") {
    data.input = listops::inputVocab();
    std::vector<std::string> classes;
    for (int d = 0; d < listops::kNumClasses; ++d)
      classes.push_back(std::to_string(d));
    data.output = Vocab(classes);
  } else {
    throw Error("unknown task '" + task + "' (expected codeexec or listops)");
  }
  return data;
}

std::vector<SequenceExample> &TaskData::split(const std::string &name) {
  switch (splitIndex(name)) {
  case 0: return train;
  case 1: return valid;
  default: return test;
  }
}

const std::vector<SequenceExample> &TaskData::split(const std::string &name) const {
  return const_cast<TaskData *>(this)->split(name);
}

TaskData loadTaskData(const DataSpec &spec, std::ostream *log,
                      const std::vector<std::string> &splits) {
  ensureData(spec, log);
  TaskData data = describeTask(spec.task);
  for (const auto &split : splits) {
    std::vector<SequenceExample> *out = &data.split(split);
    if (spec.task == "codeexec") {
      for (const auto &example : codeexec::read(spec.file(split)).examples)
        out->push_back(codeexec::encode(example));
    } else {
      for (const auto &example : listops::read(spec.file(split)).examples)
        out->push_back(listops::encode(example));
    }
  }
  return data;
}

} // namespace fwp::train
