//===- Experiment.h - Algorithmic-task runs: train and evaluate -*- C++ -*-===//
//
// Glue between the task data (Tasks.h), the models (Model.h) and the loop
// (Training.h) for code execution and ListOps; fwp-train and fwp-eval are
// thin command-line fronts over trainRun() and evaluateCheckpoint().
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/train/Config.h"
#include "fwp/train/Model.h"
#include "fwp/train/Tasks.h"
#include "fwp/train/Training.h"

#include <torch/torch.h>

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace fwp::train {

/// A padded batch: input ids [B, T] (0 = padding) and targets [B, T]
/// (kIgnore where nothing is scored), both int64 on the run's device.
struct Batch {
  torch::Tensor input;
  torch::Tensor target;
};
constexpr int64_t kIgnore = -100;

Batch makeBatch(const std::vector<SequenceExample> &data,
                const std::vector<int64_t> &indices, const torch::Device &device);

/// Mean cross-entropy over the scored positions.
torch::Tensor sequenceLoss(const torch::Tensor &logits, const Batch &batch);

/// Accumulates, over batches: loss (mean per scored target), acc (fraction of
/// sequences whose scored targets are all right: the paper's sequence-level
/// accuracy; for ListOps the classification accuracy) and, when the task has
/// a blank class, print_acc (accuracy over targets that are not blank).
class SequenceMetrics {
public:
  explicit SequenceMetrics(int32_t blankClass) : blank_(blankClass) {}
  void add(const torch::Tensor &logits, const Batch &batch);
  /// Sums the counts of every rank of `group` (sharded evaluation).
  void reduce(ProcessGroup &group);
  Metrics result() const;

private:
  int32_t blank_;
  double lossSum_ = 0;
  int64_t scored_ = 0, sequences_ = 0, sequencesRight_ = 0;
  int64_t keyTargets_ = 0, keyRight_ = 0;
};

/// Evaluates `model` (put in eval mode by the caller) on `data` in batches of
/// similar length. With a `group` of several ranks, rank r scores the
/// batches r, r + size, ... and the counts are summed: every rank gets the
/// metrics of the whole set (the same batches as one process).
Metrics evaluateModel(TokenModelImpl &model, const std::vector<SequenceExample> &data,
                      int64_t batchSize, const torch::Device &device,
                      int32_t blankClass, ProcessGroup *group = nullptr);

/// Shuffles the training set once per epoch with a seed derived from
/// (seed, epoch); the batch of step s is a pure function of s.
class EpochSampler {
public:
  EpochSampler(int64_t size, int64_t batchSize, uint64_t seed);
  std::vector<int64_t> indices(int64_t step);

private:
  int64_t size_, batchSize_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;
};

struct TrainRequest {
  std::string configPath;
  std::vector<std::string> overrides; ///< "--set" assignments, in order
  std::optional<std::string> device;  ///< overrides train.device
  bool resume = false;                ///< continue from <run_dir>/last.pt
  std::string resumeFrom;             ///< continue from this checkpoint
  bool overwrite = false;             ///< start over in a folder that holds a run
  bool allowConfigChange = false;     ///< resume with a changed configuration
  bool reference = false;             ///< force the eager reference layer
  std::optional<bool> interactive;    ///< progress bar (default: tty)
};

/// Loads the config, makes the data if missing, builds model and optimizer,
/// trains, and evaluates best.pt on the test split. Messages go to `log`.
/// Returns the test metrics of the best checkpoint (none when a stop signal
/// ended the run early: last.pt then holds it, for --resume).
Metrics trainRun(const TrainRequest &request, std::ostream &log);

struct EvalRequest {
  std::string checkpoint;
  std::string split = "test";
  std::optional<std::string> device;
  std::vector<std::string> overrides; ///< applied to the checkpoint's config
  bool reference = false;
  int64_t batchSize = 0;              ///< 0: train.batch of the run
};

Metrics evaluateCheckpoint(const EvalRequest &request, std::ostream &log);

/// The config's model and task, ready to train or evaluate.
struct Setup {
  Config config;
  DataSpec data;
  TaskData task;
  ModelOptions modelOptions;
  torch::Device device = torch::kCPU;
  uint64_t seed = 1;
};

/// Reads data/model/device settings of `config` and loads `splits`.
Setup prepare(Config config, const std::vector<std::string> &splits,
              std::ostream *log);

} // namespace fwp::train
