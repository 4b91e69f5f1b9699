// fwp-lm: word-level language modelling (docs/language-modelling.md).
//
//   fwp-lm prepare --data DIR [--cache-dir DIR] [--skip-empty-lines] [--json FILE]
//       builds (or validates) the token cache and prints corpus statistics.
//   fwp-lm train --config FILE [--set key=value]... [--device D] [--resume | --resume-from CKPT]
//                [--reference] [--no-progress-bar]
//       trains per the config, then scores best.pt on the test split.
//   fwp-lm eval --checkpoint CKPT [--split test] [--mode sliding|carry|segments]...
//               [--max-tokens N] [--set key=value]... [--device D] [--json FILE]

#include "fwp/lm/Corpus.h"
#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/ToolMain.h"
#include "fwp/lm/Run.h"
#include "fwp/runtime/Layer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <sys/resource.h>

namespace {

int64_t peakRssMiB() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

void writeJsonAtomically(const std::string &path, const nlohmann::json &json) {
  fwp::writeFileAtomically(path, json.dump(2) + "\n");
}

int prepare(const fwp::lm::CorpusOptions &options, const std::string &jsonPath) {
  const auto start = std::chrono::steady_clock::now();
  fwp::lm::Corpus corpus = fwp::lm::Corpus::open(options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto &vocab = corpus.vocab();
  nlohmann::json json;
  json["cache"] = corpus.cachePath();
  json["loaded_from_cache"] = corpus.loadedFromCache();
  if (!corpus.loadedFromCache())
    json["rebuild_reason"] = corpus.rebuildReason();
  json["seconds"] = seconds;
  json["peak_rss_mib"] = peakRssMiB();
  json["vocab_size"] = vocab.size();
  for (auto split : {fwp::lm::Split::Train, fwp::lm::Split::Valid, fwp::lm::Split::Test}) {
    const auto &info = corpus.fileInfo(split);
    json["splits"][fwp::lm::splitName(split)] = {{"file", info.path},
                                                 {"bytes", info.size},
                                                 {"tokens", corpus.numTokens(split)},
                                                 {"hash", info.hash}};
  }
  nlohmann::json top = nlohmann::json::array();
  for (int64_t id = 0; id < std::min<int64_t>(10, vocab.size()); ++id)
    top.push_back({vocab.symbol(id), vocab.count(id)});
  json["most_frequent"] = top;
  std::cout << (corpus.loadedFromCache() ? "loaded " : "built ") << corpus.cachePath() << " in " << seconds
            << " s (peak RSS " << peakRssMiB() << " MiB)\n"
            << "vocabulary " << vocab.size() << "; tokens train " << corpus.numTokens(fwp::lm::Split::Train)
            << ", valid " << corpus.numTokens(fwp::lm::Split::Valid) << ", test "
            << corpus.numTokens(fwp::lm::Split::Test) << "\n";
  if (!jsonPath.empty())
    writeJsonAtomically(jsonPath, json);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"fwp-lm: word-level language-modelling utilities"};
  app.require_subcommand(1);
  app.fallthrough();
  app.footer("\nExamples:\n"
             "  fwp-lm prepare --data data/austen\n"
             "  fwp-lm train --config models/configs/wt103_demo_austen.toml");
  fwp::lm::CorpusOptions options;
  std::string jsonPath;
  auto *prepareCmd = app.add_subcommand("prepare", "build or validate the token cache of a corpus");
  prepareCmd->footer("\nExample:\n  fwp-lm prepare --data data/austen --json austen.json");
  prepareCmd->add_option("--data", options.dataDir, "folder with wiki.{train,valid,test}.tokens")->required();
  prepareCmd->add_option("--cache-dir", options.cacheDir, "where the cache goes (default: --data)");
  prepareCmd->add_flag("--skip-empty-lines", options.skipEmptyLines, "empty lines yield no <eos>");
  prepareCmd->add_option("--json", jsonPath, "also write the statistics as JSON here");

  fwp::lm::LmTrainRequest train;
  std::string trainDevice;
  bool noBar = false;
  auto *trainCmd = app.add_subcommand("train", "train a language model from a TOML config");
  trainCmd->footer("\nExamples:\n"
                   "  fwp-lm train --config models/configs/wt103_demo_austen.toml\n"
                   "  fwp-lm train --config models/configs/wt103_delta_net_small.toml --device cuda\n"
                   "  fwp-lm train --config models/configs/wt103_demo_austen.toml --nproc 2");
  trainCmd->add_option("--config", train.configPath, "run configuration (models/configs/wt103_*.toml)")->required();
  trainCmd->add_option("--set", train.overrides, "override a config key: --set train.steps=100");
  trainCmd->add_option("--device", trainDevice, "cpu, cuda or cuda:<n> (overrides train.device)");
  auto *resume = trainCmd->add_flag("--resume", train.resume, "continue from <run_dir>/last.pt");
  trainCmd->add_option("--resume-from", train.resumeFrom, "continue from this checkpoint")->excludes(resume);
  trainCmd->add_flag("--overwrite", train.overwrite,
                     "start over in a run folder that holds a run (removes its checkpoints)");
  trainCmd->add_flag("--allow-config-change", train.allowConfigChange,
                     "resume although the configuration differs from the checkpoint's");
  trainCmd->add_flag("--reference", train.reference, "use the eager reference fast-weight layer");
  trainCmd->add_flag("--no-progress-bar", noBar, "plain progress lines even on a terminal");
  int nproc = 1;
  double distTimeout = 0;
  trainCmd->add_option("--nproc", nproc,
                       "data-parallel processes on this machine (docs/training.md)")
      ->check(CLI::Range(1, 1024));
  trainCmd->add_option("--dist-timeout", distTimeout,
                       "seconds a rank waits for the others (train.dist_timeout)");

  fwp::lm::LmEvalRequest eval;
  std::string evalDevice;
  int64_t maxTokens = 0;
  auto *evalCmd = app.add_subcommand("eval", "perplexity of a checkpoint on a split");
  evalCmd->footer("\nExample:\n"
                  "  fwp-lm eval --checkpoint runs/wt103_demo_austen/best.pt --mode carry");
  evalCmd->add_option("--checkpoint", eval.checkpoint, "a best.pt / last.pt of fwp-lm train")->required();
  evalCmd->add_option("--split", eval.split, "train, valid or test")->capture_default_str();
  evalCmd->add_option("--mode", eval.modes, "sliding, carry or segments (repeatable; default: eval.modes)");
  evalCmd->add_option("--max-tokens", maxTokens, "score only the first N tokens of the split");
  evalCmd->add_option("--set", eval.overrides, "override a key of the checkpoint's config");
  evalCmd->add_option("--device", evalDevice, "cpu, cuda or cuda:<n>");
  evalCmd->add_option("--json", eval.jsonPath, "also write the result as JSON here");

  int threads = 0;
  app.add_option("--threads", threads, "intra-op CPU threads (default: LibTorch's; 1 on a busy machine)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    const int code = app.exit(e); // prints help or the parse error
    return code == 0 ? 0 : 2;
  }
  if (threads > 0)
    torch::set_num_threads(threads);
  return fwp::runReportingErrors([&]() -> int {
    options.verbose = true;
    if (*prepareCmd)
      return prepare(options, jsonPath);
    if (*trainCmd && nproc > 1 && !fwp::train::launchedAsRank()) {
      // The launcher: N copies of this command, one per rank.
      const double grace = distTimeout > 0 ? distTimeout : 300.0;
      return fwp::train::launchLocalRanks(nproc, argv,
                                          std::chrono::milliseconds(static_cast<int64_t>(grace * 1000)));
    }
    if (*trainCmd) {
      if (distTimeout > 0)
        train.overrides.push_back("train.dist_timeout=" + std::to_string(distTimeout));
      if (!trainDevice.empty())
        train.device = trainDevice;
      if (noBar)
        train.interactive = false;
      fwp::train::installStopHandlers(); // SIGTERM/SIGINT: finish the step, write last.pt
      fwp::lm::trainLanguageModel(train, std::cout);
      return 0;
    }
    if (*evalCmd) {
      if (!evalDevice.empty())
        eval.device = evalDevice;
      if (maxTokens > 0)
        eval.maxTokens = maxTokens;
      fwp::lm::evaluateLanguageModel(eval, std::cout);
      return 0;
    }
    return 0;
  });
}
