//===- Model.h - Model stacks: fast-weight, LSTM, Transformer --*- C++ -*-===//
//
// A TokenModel is   embedding -> SequenceStack -> linear head.
// The stacks map [B, T, D_in] to [B, T, D_out] causally and can carry
// recurrent state across calls (for segment-wise language modelling):
//
//   FastWeightStack   N x ( [LN -> slow projection -> fast-weight layer ->
//                            output projection -> dropout -> +residual]
//                           [LN -> FFN -> dropout -> +residual] ) -> LN
//   LstmStack         dropout -> N-layer LSTM -> dropout
//   TransformerStack  N x ( [LN -> causal softmax attention -> +residual]
//                           [LN -> FFN -> +residual] ) -> LN
//
// The fast-weight layer itself (fwp::FastWeightLayer) comes from ONE
// factory, makeFastWeightLayer(): the eager reference of runtime/core or a
// compiled .fwpk artifact.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "fwp/runtime/Layer.h"
#include "fwp/train/Config.h"

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace fwp::train {

/// Where a model's fast-weight layer comes from.
struct FastWeightLayerSource {
  std::string name;     ///< "delta_net", "rdn", ... (MODELS.md)
  std::string artifact; ///< a compiled .fwpk; empty: the eager reference
};

/// The single place where fast-weight layers are made. `dims` are the sizes
/// the model needs ({"d": hidden / heads} and, for delta_mlp, "d_ff"); a
/// layer whose dims differ is rejected with an fwp::Error.
std::shared_ptr<const FastWeightLayer>
makeFastWeightLayer(const FastWeightLayerSource &source, const Dims &dims,
                    const torch::Device &device);

/// One layer's recurrent state by name (for a fast-weight layer the names of
/// its signature's states: "W", "y", ...; for the LSTM "h" and "c").
using LayerState = TensorMap;
/// Per layer of a stack (empty maps for layers without state).
using StackState = std::vector<LayerState>;

/// Detaches every tensor (truncated backpropagation between segments).
StackState detachState(const StackState &state);

/// A causal sequence model over feature vectors.
class SequenceStackImpl : public torch::nn::Module {
public:
  /// x: [B, T, inputSize()] -> [B, T, outputSize()]. `init` (may be null or
  /// empty) gives initial states, `final` (may be null) receives the states
  /// after the last step.
  virtual torch::Tensor forward(const torch::Tensor &x, const StackState *init,
                                StackState *final) = 0;
  virtual int64_t inputSize() const = 0;
  virtual int64_t outputSize() const = 0;
};

/// LN -> FFN (Linear, ReLU, dropout, Linear) -> dropout -> residual.
class FeedForwardBlockImpl : public torch::nn::Module {
public:
  FeedForwardBlockImpl(int64_t hidden, int64_t inner, double dropout);
  torch::Tensor forward(const torch::Tensor &x);

private:
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear up_{nullptr}, down_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(FeedForwardBlock);

/// The fast-weight sub-layer. One Linear produces every per-head sequence
/// input of the layer at once ([B, T, H * sum(n_i)], head-major, inputs in
/// signature order); params of the layer (R_q, r_b, ln_weight, ...) are
/// parameters of this block, [H, ...].
class FastWeightBlockImpl : public torch::nn::Module {
public:
  FastWeightBlockImpl(int64_t hidden, int64_t heads, double dropout,
                      std::shared_ptr<const FastWeightLayer> layer);
  torch::Tensor forward(const torch::Tensor &x, const LayerState *init,
                        LayerState *final);
  const FastWeightLayer &layer() const { return *layer_; }

private:
  struct SeqSlice {
    std::string name;
    int64_t size;
  };
  std::shared_ptr<const FastWeightLayer> layer_;
  int64_t heads_;
  int64_t outputPerHead_;
  std::vector<SeqSlice> seq_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear slowProjection_{nullptr}, outputProjection_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(FastWeightBlock);

struct StackOptions {
  int64_t layers = 4;
  int64_t hidden = 256;
  int64_t heads = 16;
  int64_t ffMult = 4; ///< FFN inner size = ffMult * hidden
  double dropout = 0.1;
};

class FastWeightStackImpl : public SequenceStackImpl {
public:
  FastWeightStackImpl(const StackOptions &options,
                      std::shared_ptr<const FastWeightLayer> layer);
  torch::Tensor forward(const torch::Tensor &x, const StackState *init,
                        StackState *final) override;
  int64_t inputSize() const override { return hidden_; }
  int64_t outputSize() const override { return hidden_; }

private:
  int64_t hidden_;
  std::vector<FastWeightBlock> fastWeight_;
  std::vector<FeedForwardBlock> feedForward_;
  torch::nn::LayerNorm finalNorm_{nullptr};
};

class LstmStackImpl : public SequenceStackImpl {
public:
  LstmStackImpl(int64_t inputSize, const StackOptions &options);
  torch::Tensor forward(const torch::Tensor &x, const StackState *init,
                        StackState *final) override;
  int64_t inputSize() const override { return inputSize_; }
  int64_t outputSize() const override { return hidden_; }

private:
  int64_t inputSize_, hidden_;
  torch::nn::LSTM lstm_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

class TransformerStackImpl : public SequenceStackImpl {
public:
  explicit TransformerStackImpl(const StackOptions &options);
  /// Attends within the call only: `init` must be empty, `final` gets one
  /// empty map per layer.
  torch::Tensor forward(const torch::Tensor &x, const StackState *init,
                        StackState *final) override;
  int64_t inputSize() const override { return hidden_; }
  int64_t outputSize() const override { return hidden_; }

private:
  int64_t hidden_, heads_;
  double dropout_;
  std::vector<torch::nn::LayerNorm> norms_;
  std::vector<torch::nn::Linear> qkv_, out_;
  std::vector<FeedForwardBlock> feedForward_;
  torch::nn::Dropout residualDropout_{nullptr};
  torch::nn::LayerNorm finalNorm_{nullptr};
};

/// [T, D] sinusoidal position encodings (Vaswani et al.).
torch::Tensor sinusoidalPositions(int64_t length, int64_t dim,
                                  const torch::TensorOptions &options);

struct ModelOptions {
  std::string kind = "fwp"; ///< "fwp", "lstm" or "transformer"
  int64_t inputVocab = 0;
  int64_t classes = 0;
  StackOptions stack;
  int64_t embedding = 0;          ///< LSTM input size; 0: = hidden
  bool positionalEncoding = false; ///< add sinusoidal positions to the embedding
  FastWeightLayerSource layer;    ///< kind == "fwp" only
  int64_t fastFeedForward = 0;    ///< delta_mlp's d_ff; 0: 4 * hidden / heads
};

/// Reads [model] of a run config: kind, layers, hidden, heads, ff_mult,
/// dropout, embedding, pos_encoding, and for kind = "fwp": layer, artifact,
/// reference (true: ignore artifact and use the eager reference), d_ff.
ModelOptions modelOptionsFromConfig(const Config &config, int64_t inputVocab,
                                    int64_t classes);

/// Builds the stack of `options` (fast-weight layers made for `device`).
std::shared_ptr<SequenceStackImpl> makeStack(const ModelOptions &options,
                                             const torch::Device &device);

/// Token ids [B, T] -> logits [B, T, classes].
class TokenModelImpl : public torch::nn::Module {
public:
  TokenModelImpl(const ModelOptions &options, const torch::Device &device);
  torch::Tensor forward(const torch::Tensor &tokens, const StackState *init = nullptr,
                        StackState *final = nullptr);
  const ModelOptions &options() const { return options_; }
  SequenceStackImpl &stack() { return *stack_; }

private:
  ModelOptions options_;
  torch::nn::Embedding embedding_{nullptr};
  std::shared_ptr<SequenceStackImpl> stack_;
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(TokenModel);

/// Number of trainable scalars.
int64_t countParameters(const torch::nn::Module &module);

/// Fails with a clear fwp::Error when `device` cannot be used here.
torch::Device parseDevice(const std::string &name);

} // namespace fwp::train
