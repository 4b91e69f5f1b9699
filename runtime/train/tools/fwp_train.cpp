//===- fwp_train.cpp - Train a model on an algorithmic task --------------===//
//
//   fwp-train --config models/configs/codeexec_small.toml [--set k=v]...
//   fwp-train gen-data --task codeexec --vars 3 --out data/codeexec3
//
// See docs/training.md.
//
//===----------------------------------------------------------------------===//

#include "fwp/train/Experiment.h"
#include "fwp/runtime/ToolMain.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <map>
#include <sstream>

using namespace fwp::train;

namespace {

std::vector<std::string> splitComma(const std::string &text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ','))
    if (!part.empty())
      parts.push_back(part);
  return parts;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"fwp-train: train a fast-weight model (or an LSTM/Transformer "
               "baseline) on code execution or ListOps"};
  app.require_subcommand(0, 1);
  app.footer("\nExamples:\n"
             "  fwp-train --config models/configs/codeexec_small.toml "
             "--artifact build/artifacts/delta_net.fwpk\n"
             "  fwp-train --config models/configs/listops10_rdn.toml --set train.steps=100\n"
             "  fwp-train --config models/configs/codeexec_small.toml --nproc 2\n"
             "  torchrun --no-python --nproc-per-node 2 fwp-train --config models/configs/codeexec_small.toml");

  TrainRequest request;
  std::string device;
  bool plain = false;
  int threads = 0;
  app.add_option("--config,-c", request.configPath, "run configuration (TOML)")
      ->check(CLI::ExistingFile);
  app.add_option("--set", request.overrides,
                 "override a config value, e.g. --set train.steps=100 (repeatable)")
      ->take_all();
  app.add_option("--device", device, "cpu, cuda or cuda:<index> (default: train.device)");
  std::map<std::string, std::string> shorthands; // flag -> its value
  const std::vector<std::pair<std::string, std::string>> shorthandKeys = {
      {"--steps", "train.steps"}, {"--run-dir", "train.run_dir"},
      {"--seed", "train.seed"}, {"--artifact", "model.artifact"}};
  for (const auto &[flag, key] : shorthandKeys)
    app.add_option(flag, shorthands[flag], "shorthand for --set " + key + "=...");
  app.add_flag("--reference", request.reference,
               "use the eager reference fast-weight layer (ignore model.artifact)")
      ->excludes("--artifact");
  app.add_flag("--resume", request.resume, "continue from <run_dir>/last.pt");
  app.add_option("--resume-from", request.resumeFrom, "continue from this checkpoint");
  app.add_flag("--overwrite", request.overwrite,
               "start over in a run folder that holds a run (removes its checkpoints)");
  app.add_flag("--allow-config-change", request.allowConfigChange,
               "resume although the configuration differs from the checkpoint's");
  app.add_flag("--plain", plain, "plain progress lines even on a terminal");
  app.add_option("--threads", threads, "intra-op CPU threads (default: train.threads or all)");
  int nproc = 1;
  double distTimeout = 0;
  app.add_option("--nproc", nproc,
                 "data-parallel processes on this machine (docs/training.md)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--dist-timeout", distTimeout,
                 "seconds a rank waits for the others (train.dist_timeout)");

  CLI::App *gen = app.add_subcommand(
      "gen-data", "generate a data set (train/valid/test.txt) and exit");
  gen->footer("\nExamples:\n"
              "  fwp-train gen-data --task codeexec --vars 3 --out data/codeexec3\n"
              "  fwp-train gen-data --config models/configs/listops10_rdn.toml");
  std::string genConfig, task, out, ops;
  int64_t seed = 1, nTrain = 10000, nValid = 1000, nTest = 1000;
  int vars = 3, statements = 100, maxConstant = 9, depth = 10, maxArgs = 5, maxLength = 0;
  bool med = false, sumMod = false, force = false;
  gen->add_option("--config,-c", genConfig, "take the [data] table of this config")
      ->check(CLI::ExistingFile);
  gen->add_option("--task", task, "codeexec or listops")
      ->check(CLI::IsMember({"codeexec", "listops"}));
  gen->add_option("--out", out, "output folder");
  gen->add_option("--seed", seed, "generator seed (default 1)");
  gen->add_option("--train", nTrain, "training examples (default 10000)");
  gen->add_option("--valid", nValid, "validation examples (default 1000)");
  gen->add_option("--test", nTest, "test examples (default 1000)");
  gen->add_option("--vars", vars, "codeexec: variables, 1-5 (default 3)");
  gen->add_option("--statements", statements, "codeexec: statements per program (default 100)");
  gen->add_option("--max-constant", maxConstant, "codeexec: constants 0..N (default 9)");
  gen->add_option("--depth", depth, "listops: exact depth (default 10)");
  gen->add_option("--max-args", maxArgs, "listops: arguments per operator, 2..N (default 5)");
  gen->add_option("--ops", ops, "listops: operators, comma-separated (default MIN,MAX,FIRST)");
  gen->add_flag("--med", med, "listops: add MED");
  gen->add_flag("--sum-mod", sumMod, "listops: add SM (sum modulo 10)");
  gen->add_option("--max-length", maxLength, "listops: at most N tokens (default: no limit)");
  gen->add_flag("--force", force, "overwrite existing files");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    // --help exits 0; a bad command line exits 2 like every other error.
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  return fwp::runReportingErrors([&]() -> int {
    if (!gen->parsed() && nproc > 1 && !launchedAsRank()) {
      // The launcher: N copies of this command, one per rank.
      const double grace = distTimeout > 0 ? distTimeout : 300.0;
      return launchLocalRanks(nproc, argv,
                              std::chrono::milliseconds(static_cast<int64_t>(grace * 1000)));
    }
    if (gen->parsed()) {
      DataSpec spec;
      if (!genConfig.empty()) {
        Config config = Config::fromFile(genConfig);
        spec = dataSpecFromConfig(config);
        if (!out.empty())
          spec.dir = out;
      } else {
        if (task.empty() || out.empty())
          throw fwp::Error("gen-data: give --config, or --task and --out");
        Config config = Config::fromString("", "gen-data");
        config.setValue("data.task", "\"" + task + "\"");
        config.setValue("data.dir", "\"" + out + "\"");
        spec = dataSpecFromConfig(config);
        spec.seed = static_cast<uint64_t>(seed);
        spec.sizes = {nTrain, nValid, nTest};
        spec.codeexec.vars = vars;
        spec.codeexec.statements = statements;
        spec.codeexec.maxConstant = maxConstant;
        spec.listops.depth = depth;
        spec.listops.maxArgs = maxArgs;
        spec.listops.maxLength = maxLength;
        if (!ops.empty())
          spec.listops.operators = splitComma(ops);
        if (med)
          spec.listops.operators.push_back("MED");
        if (sumMod)
          spec.listops.operators.push_back("SM");
      }
      bool exists = false;
      for (const auto &split : splitNames())
        exists = exists || std::filesystem::exists(spec.file(split));
      if (exists && !force)
        throw fwp::Error(spec.dir.string() +
                         " already holds data files; add --force to overwrite them");
      generateData(spec, &std::cerr);
      return 0;
    }

    if (request.configPath.empty())
      throw fwp::Error("--config is required (e.g. --config models/configs/codeexec_small.toml)");
    for (const auto &[flag, key] : shorthandKeys)
      if (app.get_option(flag)->count() > 0)
        request.overrides.push_back(key + "=" + shorthands[flag]);
    // An explicit artifact wins over a config's "reference = true".
    if (app.get_option("--artifact")->count() > 0)
      request.overrides.push_back("model.reference=false");
    if (!device.empty())
      request.device = device;
    if (threads > 0)
      request.overrides.push_back("train.threads=" + std::to_string(threads));
    if (distTimeout > 0)
      request.overrides.push_back("train.dist_timeout=" + std::to_string(distTimeout));
    if (plain)
      request.interactive = false;
    // SIGTERM/SIGINT: finish the step, write last.pt, exit 0.
    installStopHandlers();
    trainRun(request, std::cerr);
    return 0;
  });
}
