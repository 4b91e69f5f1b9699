//===- Impala.h - IMPALA with V-trace on Atari, end to end -*- C++ -*-===//
//
// Actor threads step batches of AtariEnvs with batched inference on a copy
// of the agent; a learner consumes [T+1, B] rollouts (torchbeast's layout:
// entry 0 repeats the previous unroll's last entry; entry t+1 holds the
// environment's output after action a_t together with the actor's output
// that chose a_t) and updates with V-trace, summed losses, RMSprop,
// gradient-norm clipping and a linearly decaying learning rate.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/rl/AtariEnv.h"
#include "fwp/rl/Network.h"

#include <torch/torch.h>

#include <atomic>
#include <iosfwd>
#include <string>
#include <vector>

namespace fwp::rl {

struct TrainConfig {
  int64_t totalSteps = 50'000'000; ///< agent steps (each frame_skip frames), torchbeast's unit
  int64_t batchSize = 32;
  int64_t unrollLength = 50;
  int64_t actors = 2;
  int64_t envsPerActor = 8;
  double learningRate = 6e-4;
  double rmspropAlpha = 0.99;
  double rmspropEps = 0.01;
  double gradNormClip = 40.0;
  double discount = 0.99;
  double baselineCost = 0.5;
  double entropyCost = 0.01;
  double rewardClip = 1.0; ///< clip rewards to [-c, c] in the learner; <= 0: no clipping
  uint64_t seed = 1;
  int64_t torchThreads = 1; ///< intra-op threads of every actor and the learner
  std::string device = "cpu"; ///< the learner's device ("cpu", "cuda", "cuda:1"); actors use the CPU
  double checkpointEverySeconds = 600;
  double logEverySeconds = 10;
  /// A non-finite loss or gradient (found before the optimizer step):
  /// "stop" writes the checkpoint of the last good state and fails; "skip"
  /// drops the update (on_nonfinite, the same policy as fwp-train's).
  std::string onNonFinite = "stop";
};

struct ImpalaConfig {
  AtariEnvConfig env;
  NetworkConfig model; ///< model.numActions is set from the game
  TrainConfig train;
};

/// Parses the TOML of docs/atari.md ([env], [model], [train]); every key is
/// optional, unknown keys are errors. `source` names the text in errors.
ImpalaConfig parseConfig(const std::string &tomlText, const std::string &source);
ImpalaConfig loadConfig(const std::string &path);
/// The full config as TOML (what checkpoints and run dirs record).
std::string configToToml(const ImpalaConfig &config);
/// Applies "section.key=value" overrides (value in TOML syntax).
ImpalaConfig applyOverrides(const ImpalaConfig &config, const std::vector<std::string> &overrides);

/// Time-major rollouts, [T+1, B, ...]; initialState entries are [B, ...].
struct Rollout {
  torch::Tensor frame;        ///< uint8 [T+1, B, 4, 84, 84]
  torch::Tensor reward;       ///< float [T+1, B], raw
  torch::Tensor done;         ///< bool  [T+1, B]
  torch::Tensor lastAction;   ///< int64 [T+1, B]
  torch::Tensor action;       ///< int64 [T+1, B]
  torch::Tensor policyLogits; ///< float [T+1, B, A] (behaviour policy)
  torch::Tensor baseline;     ///< float [T+1, B]
  CoreState initialState;
};

/// Concatenates rollouts along the batch dim.
Rollout concatRollouts(const std::vector<Rollout> &rollouts);

struct LossTerms {
  torch::Tensor total, policyGradient, baseline, entropy;
};

/// torchbeast's learner loss: V-trace on learner outputs over [T+1] (the
/// last entry only bootstraps), rewards clipped, discounts zero after done;
/// pg = sum(-log pi(a) * advantage), baseline = cost * 0.5 * sum((vs - V)^2),
/// entropy = cost * sum(pi * log pi).
LossTerms impalaLoss(const AgentOutput &learnerOutput, const Rollout &batch,
                     const TrainConfig &config);

struct LearnerStats {
  double totalLoss = 0, pgLoss = 0, baselineLoss = 0, entropyLoss = 0;
  double gradNorm = 0;     ///< before clipping
  double learningRate = 0; ///< used for this update
  bool skipped = false;    ///< non-finite: the update was dropped
};

class Learner {
public:
  /// Moves `model` to config.device.
  Learner(ImpalaNet model, const TrainConfig &config);
  /// One update on a batch; advances stepsDone by T * B.
  LearnerStats update(const Rollout &batch);
  /// torchbeast's LambdaLR: lr * (1 - min(steps, total) / total).
  double learningRateAt(int64_t steps) const;

  ImpalaNet model;
  torch::optim::RMSprop optimizer;
  int64_t stepsDone = 0;
  int64_t updates = 0;
  int64_t skippedUpdates = 0; ///< dropped for non-finite values
  /// Set when an update found non-finite values under on_nonfinite = "stop"
  /// (the update threw, the parameters are those of the last good update).
  bool stoppedOnNonFinite = false;
  int64_t episodes = 0;
  torch::Device device;

private:
  TrainConfig config_;
};

/// fwp::artifactDigest of config.model.artifact, or "" for the eager
/// reference layers: what checkpoints record and a resume compares.
std::string artifactDigestOf(const ImpalaConfig &config);
/// Writes config, model, optimizer and counters to `path` atomically, in
/// fwp's checkpoint format, its header recording the configuration and
/// `artifactDigest` (artifactDigestOf(config)).
void saveCheckpoint(const std::string &path, const ImpalaConfig &config, Learner &learner,
                    const std::string &artifactDigest);
/// Reads the config a checkpoint was written with.
ImpalaConfig readCheckpointConfig(const std::string &path);
/// Restores model, optimizer and counters into `learner` (on its device).
void loadCheckpoint(const std::string &path, Learner &learner);
/// Restores only the model weights.
void loadCheckpointModel(const std::string &path, ImpalaNet &model);

/// The files that make a folder hold an fwp-atari run.
inline const std::vector<std::string> kAtariRunFiles = {"checkpoint.pt", "metrics.jsonl",
                                                        "episodes.jsonl"};

struct TrainOptions {
  std::string runDir;     ///< checkpoint.pt, config.toml, metrics.jsonl, episodes.jsonl
  /// Continue from runDir/checkpoint.pt (which must exist). Without it, a
  /// runDir that holds a run is an error unless `overwrite` (the same rule
  /// as fwp-train's: fwp::train::prepareRunFolder).
  bool resume = false;
  bool overwrite = false; ///< start over, removing the earlier run's files
  /// Resume although the configuration or the compiled layer differs from
  /// the checkpoint's (fwp::train::checkResumeConfig prints the differences).
  bool allowConfigChange = false;
  std::ostream *log = nullptr;
  /// Polled between updates (e.g. set by SIGINT): stop early, still writing
  /// the checkpoint.
  const std::atomic<bool> *stopRequested = nullptr;
};
/// Trains until config.train.totalSteps (from runDir/checkpoint.pt with
/// options.resume), then writes the final checkpoint. Returns the learner's
/// step count.
int64_t train(const ImpalaConfig &config, const TrainOptions &options);

struct EpisodeResult {
  double score = 0;   ///< game score: raw rewards summed over all lives
  int64_t steps = 0;  ///< agent steps
  int64_t frames = 0; ///< emulator frames of the game
};

struct EvaluateOptions {
  int episodes = 30;
  std::string policy = "greedy"; ///< greedy (argmax, as torchbeast's test) | sample | random
  uint64_t seed = 12345;
  std::ostream *log = nullptr;   ///< one line per episode
};
/// Plays full games (all lives) with `model` (ignored for policy "random").
std::vector<EpisodeResult> evaluate(const AtariEnvConfig &env, ImpalaNet *model,
                                    const EvaluateOptions &options);

struct EnvThroughput {
  int actors = 0;
  int envsPerActor = 0;
  double seconds = 0;
  int64_t frames = 0; ///< emulator frames, no-op starts and resets included
  int64_t steps = 0;  ///< agent steps
  double framesPerSecond() const { return seconds > 0 ? frames / seconds : 0; }
};
/// Random actions, `actors` threads each stepping `envsPerActor` envs (with
/// the full preprocessing) for `seconds`.
EnvThroughput benchmarkEnvironment(const AtariEnvConfig &env, int actors, int envsPerActor,
                                   double seconds);

} // namespace fwp::rl
