//===- Training.h - Reusable training-loop pieces --------------*- C++ -*-===//
//
// Task-independent parts of fwp-train, for every runtime tool that trains:
//   makeAdam            Adam from [train] (lr, betas, eps, weight_decay)
//   save/loadCheckpoint atomic checkpoints: model, optimizer, RNG states,
//                       step, best validation value, the run's config text
//   Progress            (fwp/runtime/Progress.h) a bar on a terminal, plain lines otherwise
//   MetricsLog          metrics as JSON lines (metrics.jsonl)
//   TrainingLoop        steps -> backward -> clip -> Adam, periodic
//                       validation, best.pt / last.pt, exact resume
// The task supplies two callbacks: the loss of step s (its batch must be a
// pure function of s, so that a resumed run sees the same data) and a
// validation pass.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"
#include "fwp/runtime/Progress.h"
#include "fwp/train/Config.h"
#include "fwp/train/Distributed.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fwp::train {

using Metrics = std::map<std::string, double>;

struct AdamOptions {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.995;
  double eps = 1e-9;
  double weightDecay = 0.0;
};

/// train.lr, train.betas ([b1, b2]), train.eps, train.weight_decay.
AdamOptions adamOptionsFromConfig(const Config &config);
std::unique_ptr<torch::optim::Adam> makeAdam(const std::vector<torch::Tensor> &params,
                                             const AdamOptions &options);

/// What a checkpoint holds besides tensors.
struct CheckpointMeta {
  int64_t step = 0;               ///< optimizer steps taken
  std::optional<double> best;     ///< best validation value so far
  int64_t bestStep = -1;
  std::string config;             ///< the run's TOML (after overrides)
  std::string trainer = "fwp-train"; ///< the tool, recorded in the file's header
  std::string artifactDigest;     ///< artifactDigestOf(model) (CheckpointFile.h)
  nlohmann::json extra = nlohmann::json::object(); ///< tool-specific
  /// Tool-specific tensors (e.g. a language model's carried-over state),
  /// stored on the CPU and loaded onto the training device.
  TensorMap tensors;
};

/// Writes model parameters and buffers, the optimizer's state (when given),
/// the CPU (and, when CUDA is present, every CUDA) generator state and
/// `meta` to `path` in the checkpoint format of CheckpointFile.h (atomic,
/// fsync'd, with a SHA-256 digest that loading verifies).
void saveCheckpoint(const std::filesystem::path &path, torch::nn::Module &model,
                    torch::optim::Optimizer *optimizer, const CheckpointMeta &meta);

/// Only the meta of a checkpoint (e.g. to rebuild the model from its config).
CheckpointMeta readCheckpointMeta(const std::filesystem::path &path);

/// Loads parameters into `model` (tensors go to `device`), the optimizer
/// state when `optimizer` is given, and the RNG states when `restoreRng`.
/// Throws fwp::Error naming the file when it does not fit the model.
CheckpointMeta loadCheckpoint(const std::filesystem::path &path,
                              torch::nn::Module &model,
                              torch::optim::Optimizer *optimizer,
                              const torch::Device &device, bool restoreRng);

/// The runtime's one progress printer (fwp/runtime/Progress.h).
using fwp::formatDuration;
using fwp::Progress;

/// Keeps only the lines of a JSON-lines file whose `key` is at most
/// `keepUpTo` (and drops lines a crash cut short): a resumed run's logs then
/// read as if it had never stopped.
void truncateJsonLines(const std::filesystem::path &path, const std::string &key,
                       int64_t keepUpTo);

/// Appends JSON objects, one per line, flushed at once.
class MetricsLog {
public:
  /// With `keepUpToStep` >= 0 (resuming), records with a larger "step" are
  /// dropped first, so the log reads as if the run had never stopped.
  explicit MetricsLog(const std::filesystem::path &path, int64_t keepUpToStep = -1);
  void write(const nlohmann::json &record);

private:
  std::ofstream out_;
};

struct LoopOptions {
  int64_t steps = 1000;
  int64_t logEvery = 50;         ///< train metrics line/JSON every N steps
  int64_t evalEvery = 500;       ///< validation every N steps and at the end; 0: never
  int64_t checkpointEvery = 500; ///< last.pt every N steps and at the end; 0: end only
  double clipNorm = 0.0;         ///< global gradient-norm clip; 0: none
  std::filesystem::path runDir;  ///< last.pt, best.pt, metrics.jsonl
  std::string selectMetric = "acc"; ///< validation metric that picks best.pt
  bool higherIsBetter = true;
  std::optional<bool> interactive; ///< progress bar; default: stderr is a tty
  std::string trainer = "fwp-train"; ///< recorded in every checkpoint's header
  std::string artifactDigest; ///< fwp::artifactDigest of the model's compiled layer, or ""
  /// A non-finite loss or gradient (found before the optimizer step):
  /// "stop" writes last.pt of the last good state and fails; "skip" drops
  /// the step's update and goes on (train.on_nonfinite).
  std::string onNonFinite = "stop";
  /// Micro-batches per optimizer step (train.accumulate): their gradients
  /// add up to those of one k times larger batch.
  int64_t accumulate = 1;
  /// "f32" or "bf16" (train.precision, Precision.h): autocast for the steps.
  std::string precision = "f32";
};

/// Installs handlers for SIGTERM and SIGINT: the first signal asks every
/// TrainingLoop to stop after its current step (it writes last.pt and
/// returns, interrupted() then says so); a second one exits at once.
void installStopHandlers();
/// Whether a stop was asked for (a signal, or requestStop()).
bool stopRequested();
void requestStop();

/// The files that make a folder hold a run of fwp-train or fwp-lm.
inline const std::vector<std::string> kTrainingRunFiles = {"last.pt", "best.pt", "metrics.jsonl",
                                                           "test.json"};

/// Before a run starts in `runDir`: a folder that holds a run (any of
/// `runFiles`) is an error naming the folder unless the run resumes or
/// `overwrite` (which removes those files first).
void prepareRunFolder(const std::filesystem::path &runDir, bool resuming, bool overwrite,
                      std::ostream &log,
                      const std::vector<std::string> &runFiles = kTrainingRunFiles);

/// On resume: the configuration and the artifact digest stored in
/// `checkpoint` against the current ones; differences are printed, and an
/// error unless `allowChange`.
void checkResumeConfig(const std::filesystem::path &checkpoint, const std::string &config,
                       const std::string &artifactDigest, bool allowChange, std::ostream &log);

/// train.steps, log_every, eval_every, checkpoint_every, clip, run_dir
/// (default runs/<name>), select_metric, accumulate, precision.
LoopOptions loopOptionsFromConfig(const Config &config);

struct StepResult {
  torch::Tensor loss;  ///< scalar to minimise
  Metrics metrics;     ///< shown and logged (e.g. "acc" of the batch); "loss" is added
  /// `loss` is a mean over this many units (e.g. scored tokens). The parts
  /// of a step (processes x micro-batches) combine into their weighted mean,
  /// so that they equal one batch made of all of them; other metrics are
  /// averaged over the parts.
  double weight = 1.0;
};

/// Which share of the global batch of `step` a call computes: part `index`
/// of `count` equal parts, count = processes x train.accumulate. Rank r
/// computes parts r*accumulate ... (r+1)*accumulate - 1.
struct StepPart {
  int64_t step = 0;
  int64_t index = 0;
  int64_t count = 1;
};

class TrainingLoop {
public:
  using StepFn = std::function<StepResult(int64_t step)>;
  using PartFn = std::function<StepResult(const StepPart &part)>;
  using ValidateFn = std::function<Metrics()>;

  TrainingLoop(torch::nn::Module &model, torch::optim::Optimizer &optimizer,
               LoopOptions options, std::string configText);

  /// Continues from a checkpoint (model, optimizer, RNG, step, best).
  void resumeFrom(const std::filesystem::path &checkpoint, const torch::Device &device);
  /// Runs steps [step(), options.steps). `step` is called in train mode,
  /// `validate` in eval mode under NoGradGuard. Returns the last validation.
  Metrics run(const StepFn &step, const ValidateFn &validate);
  /// The same with data parallelism and accumulation: `part` is called for
  /// this rank's parts of every step; gradients are summed over the ranks
  /// (GradientReducer) and normalised by the total weight. `validate` runs
  /// on every rank and must reduce its metrics itself.
  Metrics run(const PartFn &part, const ValidateFn &validate);

  /// Joins `group` (default: one process): parameters and buffers are
  /// broadcast from rank 0 when run() starts, only rank 0 writes the run's
  /// files and progress.
  void setProcessGroup(ProcessGroup &group) { group_ = &group; }
  /// Called on every rank before each checkpoint is written (e.g. to
  /// gather per-rank state into extraTensors()); may use collectives.
  void onSave(std::function<void()> hook) { onSave_ = std::move(hook); }

  int64_t step() const { return step_; }
  /// Whether run() returned early because a stop was requested.
  bool interrupted() const { return interrupted_; }
  /// Steps whose update was dropped (train.on_nonfinite = "skip").
  int64_t skippedSteps() const { return skipped_; }
  std::optional<double> best() const { return best_; }
  /// Free-form JSON stored in every checkpoint this loop writes.
  nlohmann::json &extra() { return extra_; }
  /// Tensors stored in every checkpoint this loop writes and restored by
  /// resumeFrom() (e.g. recurrent state carried across training segments).
  TensorMap &extraTensors() { return extraTensors_; }

private:
  void save(const std::filesystem::path &path);

  torch::nn::Module &model_;
  torch::optim::Optimizer &optimizer_;
  LoopOptions options_;
  std::string configText_;
  int64_t step_ = 0;
  bool interrupted_ = false;
  int64_t skipped_ = 0;
  std::optional<double> best_;
  int64_t bestStep_ = -1;
  double bestLoss_ = std::numeric_limits<double>::infinity(); ///< tie-breaker
  nlohmann::json extra_ = nlohmann::json::object();
  TensorMap extraTensors_;
  ProcessGroup single_;
  ProcessGroup *group_ = &single_;
  std::function<void()> onSave_;
};

} // namespace fwp::train
