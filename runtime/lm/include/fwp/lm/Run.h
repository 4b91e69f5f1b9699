//===- Run.h - Language-model runs: train and evaluate ---------*- C++ -*-===//
//
// Glue between the corpus (Corpus.h), the word model (WordModel.h), the
// evaluations (Evaluate.h) and fwp-train's generic loop (fwp/train/Training.h):
// `fwp-lm train` and `fwp-lm eval` are thin fronts over these two functions.
// The config keys are listed in docs/language-modelling.md.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/train/Training.h"

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace fwp::lm {

/// Learning rate of (0-based) step `step`: linear warm-up over `warmup`
/// steps, then cosine decay from `lr` to `minLr` over `total` steps counted
/// from step 0 (Transformer-XL's schedule: lr * s / warmup while s < warmup,
/// else minLr + (lr - minLr) (1 + cos(pi s / total)) / 2, with s = step + 1).
/// schedule: "cosine" or "constant" (warm-up then flat).
double learningRate(const std::string &schedule, double lr, double minLr, int64_t warmup, int64_t total,
                    int64_t step);

struct LmTrainRequest {
  std::string configPath;
  std::vector<std::string> overrides; ///< "--set key=value", in order
  std::optional<std::string> device;  ///< overrides train.device
  bool resume = false;                ///< continue from <run_dir>/last.pt
  std::string resumeFrom;             ///< continue from this checkpoint
  bool overwrite = false;             ///< start over in a folder that holds a run
  bool allowConfigChange = false;     ///< resume with a changed configuration
  bool reference = false;             ///< model.reference = true
  std::optional<bool> interactive;    ///< progress bar (default: tty)
};

/// Trains per the config, then scores best.pt on the test split with the
/// modes of eval.modes. Returns the final metrics ("<mode>_ppl", ...); none
/// when a stop signal ended the run early (last.pt then holds it).
fwp::train::Metrics trainLanguageModel(const LmTrainRequest &request, std::ostream &log);

struct LmEvalRequest {
  std::string checkpoint;
  std::string split = "test";
  std::optional<std::string> device;
  std::vector<std::string> overrides; ///< applied to the checkpoint's config
  std::vector<std::string> modes;     ///< "sliding", "carry", "segments"; empty: eval.modes
  std::optional<int64_t> maxTokens;   ///< score only the first N tokens of the split
  std::string jsonPath;               ///< also write the result here
};

fwp::train::Metrics evaluateLanguageModel(const LmEvalRequest &request, std::ostream &log);

} // namespace fwp::lm
