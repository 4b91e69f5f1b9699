//===- Network.h - IMPALA agent: ResNet torso, memory core, heads -*- C++ -*-===//
//
//   frames [T, B, 4, 84, 84] uint8 -> /255 -> IMPALA ResNet [16, 32, 32]
//   (conv 3x3, max-pool 3/2, two residual blocks per stage) -> ReLU -> FC 256
//   -> ReLU; concatenated with the clipped reward and (torchbeast's
//   monobeast) the one-hot last action -> memory core -> policy logits and
//   baseline.
//
// Memory cores step through time with their state carried across unrolls
// and zeroed where an episode began (done[t]):
//   lstm:  one LSTM cell (256)
//   linear_transformer, delta_net, delta_rnn, rdn: the paper's fast-weight
//          stack: input projection to `hidden`, then `layers` x (pre-LN
//          fast-weight sublayer with `heads` x `head_dim`, residual; pre-LN
//          FF `ff` with ReLU, residual). The fast-weight recurrence itself is
//          an fwp::FastWeightLayer (the eager reference layers).
//   none:  feed-forward (the core input goes to the heads).
//
// Backpropagation through the core state: "truncated" detaches every state
// between time steps (what the paper's CUDA kernels did: they returned no
// gradient for their initial states), "full" backpropagates through the whole
// unroll. "auto" picks truncated for fast-weight cores (the paper) and full
// for the LSTM (torchbeast).
//
//===----------------------------------------------------------------------===//
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace fwp::rl {

struct NetworkConfig {
  std::string core = "lstm"; ///< lstm | linear_transformer | delta_net | delta_rnn | rdn | none
  int64_t numActions = 6;
  int64_t lstmHidden = 256;
  int64_t hidden = 128;      ///< fast-weight stack width (= heads * head_dim)
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t headDim = 32;
  int64_t ff = 512;
  std::string backprop = "auto"; ///< auto | truncated | full
  bool lastActionInput = true;
  /// A .fwpk compiled by fwp-compile for `core` with d = headDim (CPU or
  /// CUDA kernels); empty: the eager reference layer.
  std::string artifact;

  /// "truncated" or "full" after resolving "auto" for this core.
  std::string resolvedBackprop() const;
  /// Throws fwp::Error naming the field for an invalid value.
  void validate() const;
};

/// The memory cores this network offers.
const std::vector<std::string> &coreNames();

/// One recurrent state per entry, batch first ([B, ...]).
using CoreState = std::vector<torch::Tensor>;

struct AgentInput {
  torch::Tensor frame;      ///< [T, B, 4, 84, 84] uint8
  torch::Tensor reward;     ///< [T, B] float (raw; clipped inside)
  torch::Tensor done;       ///< [T, B] bool: an episode began at this frame
  torch::Tensor lastAction; ///< [T, B] int64
};

struct AgentOutput {
  torch::Tensor action;       ///< [T, B] int64 (sampled or argmax)
  torch::Tensor policyLogits; ///< [T, B, A]
  torch::Tensor baseline;     ///< [T, B]
};

/// A recurrent core: input [T, B, in], notDone [T, B] (0 where an episode
/// began) -> output [T, B, outputSize()]; `state` is replaced by the final one.
class MemoryCoreImpl : public torch::nn::Module {
public:
  virtual CoreState initialState(int64_t batch) const = 0;
  virtual torch::Tensor forward(const torch::Tensor &input, const torch::Tensor &notDone,
                                CoreState &state) = 0;
  virtual int64_t outputSize() const = 0;
};

/// The core `config.core` names for inputs of `inputSize` (nullptr for
/// "none"). Fast-weight cores run the compiled layer of `config.artifact`,
/// or the eager reference layer (fwp::train::makeFastWeightLayer).
std::shared_ptr<MemoryCoreImpl> makeMemoryCore(const NetworkConfig &config, int64_t inputSize);

class ImpalaNetImpl : public torch::nn::Module {
public:
  explicit ImpalaNetImpl(const NetworkConfig &config);

  const NetworkConfig &config() const { return config_; }
  CoreState initialState(int64_t batch) const;
  /// Runs the unroll from `state` (replaced by the final state). Actions are
  /// sampled from the policy if `sample`, else the argmax.
  AgentOutput forward(const AgentInput &input, CoreState &state, bool sample = true);

private:
  torch::Tensor torso(const torch::Tensor &frames); // [N, 4, 84, 84] uint8 -> [N, 256]

  NetworkConfig config_;
  std::vector<torch::nn::Conv2d> stageConv_;
  std::vector<torch::nn::Conv2d> residualConvs_; // 4 per stage
  torch::nn::MaxPool2d pool_{nullptr};
  torch::nn::Linear fc_{nullptr};
  std::shared_ptr<MemoryCoreImpl> core_;
  torch::nn::Linear policy_{nullptr};
  torch::nn::Linear baseline_{nullptr};
};
TORCH_MODULE(ImpalaNet);

/// Copies every parameter and buffer of `from` into `to` (same config).
void copyParameters(const torch::nn::Module &from, torch::nn::Module &to);

} // namespace fwp::rl
