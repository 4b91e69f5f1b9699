//===- Evaluate.h - Perplexity: sliding window and carried-over state -*- C++ -*-===//
//
// Two ways to score a split (docs/language-modelling.md):
//
// - Sliding window (the paper's eval_sliding_window.py with batch 1): windows
//   of `context` tokens slide by one over the split, each from a zero state;
//   the first window scores all its positions, every later one only its last,
//   so every token after the first few is predicted from exactly `context`
//   tokens (the one before it included). All tokens but the first are scored.
// - Carry-over ("full context"): the split is cut into `batchSize` contiguous
//   rows (the remainder after batchSize * rowLength is dropped) read in
//   segments of `segmentLength`; the recurrent state after a segment is the
//   initial state of the next, so each row is one unbroken pass.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace fwp::lm {

/// Recurrent state of a model stack: one TensorMap per layer, holding
/// "init.<state>" tensors for the next segment. Empty = all zeros.
using LmState = std::vector<TensorMap>;

/// Detached copy (no autograd history): state carried across segments.
LmState detachState(const LmState &state);

/// What training and evaluation drive. Models are causal: position t of
/// hidden() depends on inputs 0..t (and the state) only.
class LanguageModel {
public:
  virtual ~LanguageModel() = default;
  /// inputs int64 [B, T] -> (hidden [B, T, d], state after step T-1).
  virtual std::pair<torch::Tensor, LmState> hidden(const torch::Tensor &inputs, const LmState &state) = 0;
  /// hidden [N, d], targets int64 [N] -> -log p(target) [N] (natural log).
  virtual torch::Tensor nll(const torch::Tensor &hidden, const torch::Tensor &targets) = 0;
  /// Where inputs must live (the parameters' device).
  virtual torch::Device device() const = 0;
};

struct Perplexity {
  double nllSum = 0; ///< summed -log p, natural log
  int64_t tokens = 0;
  double seconds = 0;
  double loss() const { return tokens ? nllSum / static_cast<double>(tokens) : 0.0; }
  double perplexity() const;
};

/// Called after each batch with (done, total) in units of batches.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

/// `tokens` int32/int64 [N]. `windowsPerBatch` windows run side by side.
Perplexity evaluateSlidingWindow(LanguageModel &model, const torch::Tensor &tokens, int64_t context,
                                 int64_t windowsPerBatch, const ProgressFn &progress = {});

/// `tokens` int32/int64 [N], see OrderedBatches (Corpus.h) for the rows.
Perplexity evaluateCarryOver(LanguageModel &model, const torch::Tensor &tokens, int64_t batchSize,
                             int64_t segmentLength, const ProgressFn &progress = {});

/// The same rows and segments; carryState = false starts every segment from
/// a zero state (Transformer-XL's usual per-segment evaluation), true is
/// evaluateCarryOver. At most `maxSegments` segments (0: all).
Perplexity evaluateSegments(LanguageModel &model, const torch::Tensor &tokens, int64_t batchSize,
                            int64_t segmentLength, bool carryState, int64_t maxSegments = 0,
                            const ProgressFn &progress = {});

} // namespace fwp::lm
