//===- WordModel.cpp - Word-level LM: adaptive I/O around a model stack -----===//

#include "fwp/lm/WordModel.h"

namespace fwp::lm {

WordModelOptions wordModelOptionsFromConfig(const fwp::train::Config &config, int64_t vocabSize) {
  WordModelOptions options;
  options.stack = fwp::train::modelOptionsFromConfig(config, vocabSize, vocabSize);
  options.stack.positionalEncoding = config.getBool("model.pos_encoding", true);
  AdaptiveOptions &a = options.adaptive;
  a.vocabSize = vocabSize;
  a.dModel = options.stack.stack.hidden;
  a.dEmbed = config.getInt("lm.d_embed", 0);
  std::vector<int64_t> cutoffs;
  for (double c : config.getDoubles("lm.cutoffs", std::vector<double>{20000, 40000, 200000})) {
    if (c != static_cast<double>(static_cast<int64_t>(c)))
      throw Error(config.source() + ": lm.cutoffs must be integers");
    cutoffs.push_back(static_cast<int64_t>(c));
  }
  a.cutoffs = cutoffs;
  a.divVal = config.getInt("lm.div_val", 1);
  a.tieWeights = config.getBool("lm.tie_weights", true);
  a.tieProjections = config.getBool("lm.tie_projections", true);
  options.clampLength = config.getInt("lm.clamp_len", 0);
  if (options.clampLength < 0)
    throw Error(config.source() + ": lm.clamp_len must be >= 0");
  if (options.stack.kind == "lstm" && options.stack.embedding != options.stack.stack.hidden)
    throw Error(config.source() + ": model.embedding must equal model.hidden for a language model "
                                  "(the adaptive softmax reads the LSTM's output)");
  try {
    effectiveCutoffs(a.cutoffs, vocabSize);
  } catch (const Error &e) {
    throw Error(config.source() + ": lm.cutoffs: " + e.what());
  }
  return options;
}

WordModelImpl::WordModelImpl(WordModelOptions options, const torch::Device &device)
    : options_(std::move(options)), device_(device) {
  stack_ = register_module("stack", fwp::train::makeStack(options_.stack, device));
  if (stack_->inputSize() != options_.adaptive.dModel || stack_->outputSize() != options_.adaptive.dModel)
    throw Error("language model: the stack maps " + std::to_string(stack_->inputSize()) + " -> " +
                std::to_string(stack_->outputSize()) + " features, the adaptive input/softmax needs " +
                std::to_string(options_.adaptive.dModel) + " -> " + std::to_string(options_.adaptive.dModel));
  io_ = register_module("io", AdaptiveInputOutput(options_.adaptive));
  dropout_ = register_module("dropout", torch::nn::Dropout(options_.stack.stack.dropout));
  to(device);
}

std::pair<torch::Tensor, LmState> WordModelImpl::hidden(const torch::Tensor &inputs, const LmState &state) {
  if (inputs.dim() != 2)
    throw Error("language model: inputs must be [B, T], got " + c10::str(inputs.sizes()));
  torch::Tensor x = io_->embed(inputs);
  if (options_.stack.positionalEncoding) {
    const int64_t length = inputs.size(1);
    auto positions = torch::arange(length - 1, -1, -1, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
    if (options_.clampLength > 0)
      positions = positions.clamp_max(static_cast<double>(options_.clampLength));
    x = x + sinusoidalPositions(positions, x.size(2)).to(x.dtype()).unsqueeze(0);
  }
  x = dropout_(x);
  bool hasState = false;
  for (const auto &layer : state)
    hasState = hasState || !layer.empty();
  LmState final;
  torch::Tensor out = stack_->forward(x, hasState ? &state : nullptr, &final);
  return {out, std::move(final)};
}

torch::Tensor WordModelImpl::nll(const torch::Tensor &hidden, const torch::Tensor &targets) {
  return io_->nll(hidden, targets);
}

} // namespace fwp::lm
