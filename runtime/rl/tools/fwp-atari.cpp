//===- fwp-atari.cpp - train / test IMPALA agents on Atari; env benchmark -===//
//
//   fwp-atari train --config models/configs/atari_pong_lstm.toml --run-dir runs/pong_lstm
//   fwp-atari train ... --resume | --overwrite [--allow-config-change]
//   fwp-atari test  --checkpoint runs/pong_lstm/checkpoint.pt --episodes 30
//   fwp-atari test  --policy random --game breakout --episodes 10
//   fwp-atari bench-env --game pong --actors 1,2 --envs-per-actor 8 --seconds 10
//
// Errors print "error: ..." and exit with code 2. See docs/atari.md.
//
//===----------------------------------------------------------------------===//
#include "fwp/rl/Impala.h"
#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/ToolMain.h"
#include "fwp/runtime/Layer.h"
#include "fwp/train/Training.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <fstream>
#include <iomanip>
#include <iostream>

using namespace fwp::rl;

namespace {


struct Summary {
  double mean = 0, std = 0;
};
Summary summarize(const std::vector<EpisodeResult> &results) {
  Summary s;
  if (results.empty())
    return s;
  for (const auto &r : results)
    s.mean += r.score / results.size();
  for (const auto &r : results)
    s.std += (r.score - s.mean) * (r.score - s.mean) / results.size();
  s.std = std::sqrt(s.std);
  return s;
}

/// The 1-minute load average (Linux), so shared-machine numbers say how
/// shared the machine was; -1 where unknown.
double loadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return load;
}

std::vector<int> parseCounts(const std::string &list) {
  std::vector<int> counts;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const int v = std::stoi(item, &used);
      if (used != item.size() || v <= 0)
        throw std::invalid_argument(item);
      counts.push_back(v);
    } catch (const std::exception &) {
      throw fwp::Error("--actors: '" + item + "' is not a positive integer");
    }
  }
  if (counts.empty())
    throw fwp::Error("--actors: empty list");
  return counts;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"fwp-atari: IMPALA/V-trace agents with LSTM or fast-weight memory on Atari 2600 "
               "(ALE)"};
  app.require_subcommand(1);
  app.footer("\nExamples:\n"
             "  fwp-atari train --config models/configs/atari_cpu_breakout_delta_net.toml "
             "--run-dir runs/breakout\n"
             "  fwp-atari test --checkpoint runs/breakout/checkpoint.pt --episodes 30");

  auto *trainCmd = app.add_subcommand("train", "train (or resume) an agent");
  trainCmd->footer("\nExample:\n"
                   "  fwp-atari train --config models/configs/atari_cpu_breakout_delta_net.toml "
                   "--run-dir runs/breakout");
  std::string configPath, runDir;
  bool resume = false, overwrite = false, allowConfigChange = false;
  std::vector<std::string> overrides;
  trainCmd->add_option("--config", configPath, "TOML config (docs/atari.md)")->required();
  trainCmd->add_option("--run-dir", runDir, "output dir: checkpoint.pt, config.toml, *.jsonl")
      ->required();
  auto *resumeFlag =
      trainCmd->add_flag("--resume", resume, "continue from <run-dir>/checkpoint.pt");
  auto *overwriteFlag = trainCmd->add_flag(
      "--overwrite,--fresh", overwrite,
      "start over: remove run-dir's checkpoint.pt and *.jsonl (alias --fresh)");
  resumeFlag->excludes(overwriteFlag);
  trainCmd->add_flag("--allow-config-change", allowConfigChange,
                     "resume although the configuration differs from the checkpoint's");
  trainCmd->add_option("--set", overrides, "override a config value: section.key=value");

  auto *testCmd = app.add_subcommand("test", "play full games and report the scores");
  testCmd->footer("\nExamples:\n"
                  "  fwp-atari test --checkpoint runs/breakout/checkpoint.pt --episodes 30\n"
                  "  fwp-atari test --policy random --game breakout --episodes 10");
  std::string checkpoint, policy = "greedy", game, outPath;
  int episodes = 30;
  uint64_t seed = 12345;
  testCmd->add_option("--checkpoint", checkpoint, "checkpoint.pt written by train");
  testCmd->add_option("--policy", policy, "greedy (argmax, default), sample, or random")
      ->check(CLI::IsMember({"greedy", "sample", "random"}));
  testCmd->add_option("--game", game, "game for --policy random (else the checkpoint's)");
  testCmd->add_option("--episodes", episodes, "number of games")->check(CLI::PositiveNumber);
  testCmd->add_option("--seed", seed, "environment seed");
  testCmd->add_option("--out", outPath, "write the per-episode scores as JSON here");
  int threads = 1;
  testCmd->add_option("--threads", threads, "LibTorch intra-op threads")->check(CLI::PositiveNumber);

  auto *benchCmd = app.add_subcommand("bench-env", "environment throughput, random actions");
  benchCmd->footer("\nExample:\n"
                   "  fwp-atari bench-env --game pong --actors 1,2 --seconds 10");
  std::string benchGame = "pong", actorList = "1,2";
  int envsPerActor = 8;
  double seconds = 10;
  benchCmd->add_option("--game", benchGame, "ROM name");
  benchCmd->add_option("--actors", actorList, "comma-separated actor (thread) counts");
  benchCmd->add_option("--envs-per-actor", envsPerActor, "envs stepped by each actor")
      ->check(CLI::PositiveNumber);
  benchCmd->add_option("--seconds", seconds, "seconds per measurement")
      ->check(CLI::PositiveNumber);
  benchCmd->add_option("--out", outPath, "write the results as JSON here");

  CLI11_PARSE(app, argc, argv);

  return fwp::runReportingErrors([&]() -> int {
    if (*trainCmd) {
      ImpalaConfig config = applyOverrides(loadConfig(configPath), overrides);
      // SIGTERM/SIGINT: finish the update, write the checkpoint, exit 0; a
      // second signal exits at once.
      fwp::train::installStopHandlers();
      TrainOptions options;
      options.runDir = runDir;
      options.resume = resume;
      options.overwrite = overwrite;
      options.allowConfigChange = allowConfigChange;
      options.log = &std::cout;
      train(config, options);
      return 0;
    }
    if (*testCmd) {
      at::set_num_threads(threads);
      EvaluateOptions options;
      options.episodes = episodes;
      options.policy = policy;
      options.seed = seed;
      options.log = &std::cout;
      AtariEnvConfig env;
      std::optional<ImpalaNet> model;
      if (!checkpoint.empty()) {
        const ImpalaConfig config = readCheckpointConfig(checkpoint);
        env = config.env;
        model.emplace(config.model);
        loadCheckpointModel(checkpoint, *model);
        std::cout << "[test] " << checkpoint << ": " << env.game << ", core "
                  << config.model.core << ", policy " << policy << "\n";
      } else if (policy != "random") {
        throw fwp::Error("test: --checkpoint is required unless --policy random");
      }
      if (!game.empty())
        env.game = game;
      if (checkpoint.empty() && game.empty())
        throw fwp::Error("test --policy random: --game is required without --checkpoint");
      const auto results = evaluate(env, model ? &*model : nullptr, options);
      const Summary s = summarize(results);
      std::cout << std::fixed << std::setprecision(2) << "[test] " << env.game << ": mean score "
                << s.mean << ", std " << s.std << " over " << results.size() << " episodes\n";
      if (!outPath.empty()) {
        nlohmann::json out = {{"game", env.game},      {"checkpoint", checkpoint},
                              {"policy", policy},      {"seed", seed},
                              {"mean_score", s.mean},  {"std_score", s.std},
                              {"episodes", nlohmann::json::array()}};
        for (const auto &r : results)
          out["episodes"].push_back({{"score", r.score}, {"steps", r.steps}, {"frames", r.frames}});
        fwp::writeFileAtomically(outPath, out.dump(2) + "\n");
      }
      return 0;
    }
    if (*benchCmd) {
      AtariEnvConfig env;
      env.game = benchGame;
      nlohmann::json out = {{"benchmark", "atari-env-throughput"},
                            {"game", benchGame},
                            {"envs_per_actor", envsPerActor},
                            {"seconds_per_point", seconds},
                            {"hardware_threads", std::thread::hardware_concurrency()},
                            {"preprocessing", "torchbeast: noop 30, skip 4 + max, episodic life, "
                                              "fire reset, 84x84 gray, stack 4"},
                            {"policy", "uniform random"},
                            {"results", nlohmann::json::array()}};
      for (int actors : parseCounts(actorList)) {
        const EnvThroughput r = benchmarkEnvironment(env, actors, envsPerActor, seconds);
        std::cout << std::fixed << std::setprecision(0) << "[bench-env] " << benchGame << ": "
                  << actors << " actor(s) x " << envsPerActor << " envs: " << r.framesPerSecond()
                  << " frames/s (" << r.steps / r.seconds << " agent steps/s)" << std::endl;
        out["results"].push_back({{"actors", actors},
                                  {"load_average_1min_after", loadAverage()},
                                  {"frames", r.frames},
                                  {"steps", r.steps},
                                  {"seconds", r.seconds},
                                  {"frames_per_second", r.framesPerSecond()},
                                  {"steps_per_second", r.steps / r.seconds}});
      }
      if (!outPath.empty())
        fwp::writeFileAtomically(outPath, out.dump(2) + "\n");
      return 0;
    }
    return 0;
  });
}
