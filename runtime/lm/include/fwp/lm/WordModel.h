//===- WordModel.h - Word-level LM: adaptive I/O around a model stack -*- C++ -*-===//
//
//   ids -> adaptive input (x sqrt(d)) [+ sinusoidal positions] -> dropout
//       -> fwp-train's sequence stack (fast-weight, LSTM or Transformer)
//       -> adaptive softmax
//
// Positions follow Transformer-XL's absolute encoding: in a segment of T
// tokens the token at index t gets position T - 1 - t (counted back from the
// last token), optionally clamped to `clampLength`.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/lm/Adaptive.h"
#include "fwp/lm/Evaluate.h"
#include "fwp/train/Config.h"
#include "fwp/train/Model.h"

#include <torch/torch.h>

#include <memory>

namespace fwp::lm {

struct WordModelOptions {
  /// [model]: kind, layers, hidden, heads, ff_mult, dropout, layer, ...;
  /// model.pos_encoding switches the sinusoidal positions.
  fwp::train::ModelOptions stack;
  AdaptiveOptions adaptive; ///< [lm]: cutoffs, div_val, d_embed, tie_weights, tie_projections
  int64_t clampLength = 0;  ///< [lm] clamp_len; 0: no clamp
};

/// Reads [model] (fwp-train's keys) and [lm]; the vocabulary size comes from
/// the corpus.
WordModelOptions wordModelOptionsFromConfig(const fwp::train::Config &config, int64_t vocabSize);

class WordModelImpl : public torch::nn::Module, public LanguageModel {
public:
  WordModelImpl(WordModelOptions options, const torch::Device &device);

  std::pair<torch::Tensor, LmState> hidden(const torch::Tensor &inputs, const LmState &state) override;
  torch::Tensor nll(const torch::Tensor &hidden, const torch::Tensor &targets) override;
  torch::Device device() const override { return device_; }

  const WordModelOptions &options() const { return options_; }
  AdaptiveInputOutputImpl &io() { return *io_; }
  /// False for the Transformer: nothing is carried between segments.
  bool recurrent() const { return options_.stack.kind != "transformer"; }

private:
  WordModelOptions options_;
  torch::Device device_;
  AdaptiveInputOutput io_{nullptr};
  std::shared_ptr<fwp::train::SequenceStackImpl> stack_;
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(WordModel);

} // namespace fwp::lm
