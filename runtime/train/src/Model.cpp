//===- Model.cpp - Model stacks: fast-weight, LSTM, Transformer ----------===//

#include "fwp/train/Model.h"

#include "fwp/train/Precision.h"

#include "fwp/runtime/CompiledLayer.h"

#include <algorithm>
#include <cmath>
#include <unistd.h>
#include <numeric>

namespace fwp::train {

//===----------------------------------------------------------------------===//
// The fast-weight layer factory
//===----------------------------------------------------------------------===//

std::shared_ptr<const FastWeightLayer>
makeFastWeightLayer(const FastWeightLayerSource &source, const Dims &dims,
                    const torch::Device &device) {
  std::shared_ptr<const FastWeightLayer> layer;
  if (!source.artifact.empty()) {
    // A layer compiled by fwp-compile (config key model.artifact). Its
    // kernels check the tensors' device on every call.
    (void)device;
    if (::access(source.artifact.c_str(), R_OK) != 0)
      throw Error("model.artifact = \"" + source.artifact +
                  "\": no such file (compile it with fwp-compile models/" +
                  (source.name.empty() ? std::string("<layer>") : source.name) +
                  ".mlir -o " + source.artifact +
                  ", run scripts/main.sh, or use the eager layer: --reference)");
    layer = loadCompiledLayer(source.artifact);
  } else {
    // The eager reference takes the model's sizes that the layer names
    // (d_ff only where a layer has one).
    std::vector<std::string> known = dimNames(makeReferenceLayer(source.name, {})->signature());
    Dims used;
    for (const auto &[dim, value] : dims)
      if (std::find(known.begin(), known.end(), dim) != known.end())
        used[dim] = value;
    layer = makeReferenceLayer(source.name, used);
  }
  const LayerSignature &signature = layer->signature();
  if (!source.name.empty() && signature.layer != source.name)
    throw Error("model.layer = \"" + source.name + "\" but " +
                (source.artifact.empty() ? std::string("the reference")
                                         : source.artifact) +
                " implements \"" + signature.layer + "\"");
  for (const auto &[dim, value] : dims) {
    auto it = layer->dims().find(dim);
    if (it == layer->dims().end())
      continue; // a size this layer does not use (d_ff of a delta_net)
    if (it->second != value)
      throw Error((source.artifact.empty() ? "the reference " + signature.layer
                                           : source.artifact) +
                  " has " + dim + " = " + std::to_string(it->second) +
                  " but the model needs " + dim + " = " + std::to_string(value) +
                  " (model.hidden / model.heads" +
                  (dim == "d_ff" ? std::string(", model.d_ff") : std::string()) +
                  "); compile the layer with --dim " + dim + "=" +
                  std::to_string(value));
  }
  return layer;
}

StackState detachState(const StackState &state) {
  StackState detached;
  detached.reserve(state.size());
  for (const auto &layer : state) {
    LayerState copy;
    for (const auto &[name, tensor] : layer)
      copy.emplace(name, tensor.detach());
    detached.push_back(std::move(copy));
  }
  return detached;
}

//===----------------------------------------------------------------------===//
// Blocks
//===----------------------------------------------------------------------===//

FeedForwardBlockImpl::FeedForwardBlockImpl(int64_t hidden, int64_t inner,
                                           double dropout) {
  norm_ = register_module("norm", torch::nn::LayerNorm(
                                      torch::nn::LayerNormOptions({hidden})));
  up_ = register_module("up", torch::nn::Linear(hidden, inner));
  down_ = register_module("down", torch::nn::Linear(inner, hidden));
  dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
}

torch::Tensor FeedForwardBlockImpl::forward(const torch::Tensor &x) {
  torch::Tensor h = dropout_(torch::relu(up_(norm_(x))));
  return x + dropout_(down_(h));
}

namespace {

int64_t product(const std::vector<int64_t> &shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1},
                         std::multiplies<int64_t>());
}

bool startsWith(const std::string &text, const std::string &prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

} // namespace

FastWeightBlockImpl::FastWeightBlockImpl(int64_t hidden, int64_t heads,
                                         double dropout,
                                         std::shared_ptr<const FastWeightLayer> layer)
    : layer_(std::move(layer)), heads_(heads) {
  const LayerSignature &signature = layer_->signature();
  const Dims &dims = layer_->dims();
  int64_t seqTotal = 0;
  for (const auto &spec : signature.seq) {
    int64_t size = product(resolveShape(spec, dims));
    seq_.push_back({spec.name, size});
    seqTotal += size;
  }
  outputPerHead_ = product(resolveShape(signature.output, dims));

  norm_ = register_module("norm", torch::nn::LayerNorm(
                                      torch::nn::LayerNormOptions({hidden})));
  slowProjection_ = register_module(
      "slow_projection",
      torch::nn::Linear(torch::nn::LinearOptions(hidden, heads * seqTotal).bias(false)));
  outputProjection_ = register_module(
      "output_projection",
      torch::nn::Linear(
          torch::nn::LinearOptions(heads * outputPerHead_, hidden).bias(false)));
  dropout_ = register_module("dropout", torch::nn::Dropout(dropout));

  // Per-head slow params of the layer: the initial value the layer asks
  // for (FastWeightLayer::paramInits: the artifact manifest's params[].init
  // or the reference's, e.g. retnet's decay), else LayerNorm gains 1, biases
  // and vectors (r_b) 0, matrices (R_q, R_k, R_v) small random.
  torch::NoGradGuard noGrad;
  const std::map<std::string, std::string> inits = layer_->paramInits();
  for (const auto &spec : signature.params) {
    std::vector<int64_t> shape = resolveShape(spec, dims);
    std::vector<int64_t> full = {heads};
    full.insert(full.end(), shape.begin(), shape.end());
    torch::Tensor init;
    if (inits.count(spec.name))
      init = initialParam(inits.at(spec.name), heads, shape);
    else if (startsWith(spec.name, "ln_weight"))
      init = torch::ones(full);
    else if (shape.size() >= 2)
      init = torch::randn(full) / std::sqrt(static_cast<double>(shape[0]));
    else
      init = torch::zeros(full);
    params_.emplace_back(spec.name, register_parameter(spec.name, init));
  }
}

torch::Tensor FastWeightBlockImpl::forward(const torch::Tensor &x,
                                           const LayerState *init,
                                           LayerState *final) {
  const int64_t B = x.size(0), T = x.size(1);
  int64_t seqTotal = 0;
  for (const auto &slice : seq_)
    seqTotal += slice.size;
  // [B, T, H * S] -> [B, H, T, S]: each head's inputs are contiguous.
  torch::Tensor projected =
      slowProjection_(norm_(x)).view({B, T, heads_, seqTotal}).permute({0, 2, 1, 3});
  // Under bf16 autocast (Precision.h) the projections ran in bf16; the
  // fast-weight layer takes float32 inputs and keeps its state and
  // arithmetic in float32.
  AutocastOff f32(x.device().type());
  auto f32Input = [&](const torch::Tensor &tensor) {
    return f32.wasEnabled() ? tensor.to(torch::kFloat) : tensor;
  };
  TensorMap inputs;
  int64_t offset = 0;
  for (const auto &slice : seq_) {
    inputs.emplace(slice.name, f32Input(projected.narrow(3, offset, slice.size).contiguous()));
    offset += slice.size;
  }
  for (const auto &[name, param] : params_)
    inputs.emplace(name, param);
  if (init)
    for (const auto &[name, tensor] : *init)
      inputs.emplace("init." + name, f32Input(tensor));
  TensorMap outputs = layer_->forward(inputs);
  auto y = outputs.find("y");
  if (y == outputs.end())
    throw Error("fast-weight layer " + layer_->signature().layer +
                " returned no output 'y'");
  if (final) {
    final->clear();
    for (const auto &state : layer_->signature().states) {
      auto it = outputs.find("final." + state.name);
      if (it == outputs.end())
        throw Error("fast-weight layer " + layer_->signature().layer +
                    " returned no 'final." + state.name + "'");
      final->emplace(state.name, it->second);
    }
  }
  // [B, H, T, d] -> [B, T, H * d]; the output projection autocasts again.
  std::optional<AutocastGuard> again;
  if (f32.wasEnabled())
    again.emplace("bf16", x.device());
  torch::Tensor merged =
      y->second.permute({0, 2, 1, 3}).reshape({B, T, heads_ * outputPerHead_});
  return x + dropout_(outputProjection_(merged));
}

//===----------------------------------------------------------------------===//
// Stacks
//===----------------------------------------------------------------------===//

namespace {

const LayerState *stateAt(const StackState *state, size_t i) {
  if (!state || state->empty())
    return nullptr;
  if (i >= state->size())
    throw Error("initial state has " + std::to_string(state->size()) +
                " layers, the model " + std::to_string(i + 1) + " or more");
  return &(*state)[i];
}

} // namespace

FastWeightStackImpl::FastWeightStackImpl(const StackOptions &options,
                                         std::shared_ptr<const FastWeightLayer> layer)
    : hidden_(options.hidden) {
  for (int64_t i = 0; i < options.layers; ++i) {
    fastWeight_.push_back(register_module(
        "fast_weight" + std::to_string(i),
        FastWeightBlock(options.hidden, options.heads, options.dropout, layer)));
    feedForward_.push_back(register_module(
        "feed_forward" + std::to_string(i),
        FeedForwardBlock(options.hidden, options.ffMult * options.hidden,
                         options.dropout)));
  }
  finalNorm_ = register_module(
      "final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden_})));
}

torch::Tensor FastWeightStackImpl::forward(const torch::Tensor &x,
                                           const StackState *init,
                                           StackState *final) {
  torch::Tensor h = x;
  if (final)
    final->assign(fastWeight_.size(), LayerState{});
  for (size_t i = 0; i < fastWeight_.size(); ++i) {
    h = fastWeight_[i]->forward(h, stateAt(init, i), final ? &(*final)[i] : nullptr);
    h = feedForward_[i]->forward(h);
  }
  return finalNorm_(h);
}

LstmStackImpl::LstmStackImpl(int64_t inputSize, const StackOptions &options)
    : inputSize_(inputSize), hidden_(options.hidden) {
  lstm_ = register_module(
      "lstm", torch::nn::LSTM(torch::nn::LSTMOptions(inputSize, options.hidden)
                                  .num_layers(options.layers)
                                  .batch_first(true)));
  dropout_ = register_module("dropout", torch::nn::Dropout(options.dropout));
}

torch::Tensor LstmStackImpl::forward(const torch::Tensor &x, const StackState *init,
                                     StackState *final) {
  torch::Tensor y;
  std::tuple<torch::Tensor, torch::Tensor> hc;
  if (const LayerState *state = stateAt(init, 0)) {
    auto h = state->find("h"), c = state->find("c");
    if (h == state->end() || c == state->end())
      throw Error("the LSTM's initial state needs tensors 'h' and 'c'");
    std::tie(y, hc) = lstm_->forward(dropout_(x), std::make_tuple(h->second, c->second));
  } else {
    std::tie(y, hc) = lstm_->forward(dropout_(x));
  }
  if (final)
    *final = {LayerState{{"h", std::get<0>(hc)}, {"c", std::get<1>(hc)}}};
  return dropout_(y);
}

TransformerStackImpl::TransformerStackImpl(const StackOptions &options)
    : hidden_(options.hidden), heads_(options.heads), dropout_(options.dropout) {
  if (options.hidden % options.heads != 0)
    throw Error("model.hidden (" + std::to_string(options.hidden) +
                ") must be a multiple of model.heads (" +
                std::to_string(options.heads) + ")");
  for (int64_t i = 0; i < options.layers; ++i) {
    std::string n = std::to_string(i);
    norms_.push_back(register_module(
        "attention_norm" + n,
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden_}))));
    qkv_.push_back(register_module("qkv" + n, torch::nn::Linear(hidden_, 3 * hidden_)));
    out_.push_back(register_module("attention_out" + n, torch::nn::Linear(hidden_, hidden_)));
    feedForward_.push_back(register_module(
        "feed_forward" + n,
        FeedForwardBlock(hidden_, options.ffMult * hidden_, options.dropout)));
  }
  residualDropout_ = register_module("dropout", torch::nn::Dropout(options.dropout));
  finalNorm_ = register_module(
      "final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden_})));
}

torch::Tensor TransformerStackImpl::forward(const torch::Tensor &x,
                                            const StackState *init,
                                            StackState *final) {
  if (init && !init->empty())
    throw Error("the Transformer baseline carries no state between calls");
  const int64_t B = x.size(0), T = x.size(1), dHead = hidden_ / heads_;
  torch::Tensor h = x;
  for (size_t i = 0; i < qkv_.size(); ++i) {
    // [B, T, 3, H, d] -> three [B, H, T, d]
    torch::Tensor qkv =
        qkv_[i](norms_[i](h)).view({B, T, 3, heads_, dHead}).permute({2, 0, 3, 1, 4});
    torch::Tensor attended = at::scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], /*attn_mask=*/{}, is_training() ? dropout_ : 0.0,
        /*is_causal=*/true);
    attended = attended.permute({0, 2, 1, 3}).reshape({B, T, hidden_});
    h = h + residualDropout_(out_[i](attended));
    h = feedForward_[i]->forward(h);
  }
  if (final)
    final->assign(qkv_.size(), LayerState{});
  return finalNorm_(h);
}

torch::Tensor sinusoidalPositions(int64_t length, int64_t dim,
                                  const torch::TensorOptions &options) {
  torch::Tensor position =
      torch::arange(length, options.dtype(torch::kFloat)).unsqueeze(1);
  torch::Tensor frequency = torch::exp(
      torch::arange(0, dim, 2, options.dtype(torch::kFloat)) *
      (-std::log(10000.0) / static_cast<double>(dim)));
  torch::Tensor table = torch::zeros({length, dim}, options.dtype(torch::kFloat));
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, torch::indexing::None, 2)},
                   torch::sin(position * frequency));
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)},
                   torch::cos(position * frequency).narrow(1, 0, dim / 2));
  return table.to(options.dtype());
}

//===----------------------------------------------------------------------===//
// Options, factory, token model
//===----------------------------------------------------------------------===//

ModelOptions modelOptionsFromConfig(const Config &config, int64_t inputVocab,
                                    int64_t classes) {
  ModelOptions options;
  options.inputVocab = inputVocab;
  options.classes = classes;
  options.kind = config.getString("model.kind", "fwp");
  if (options.kind != "fwp" && options.kind != "lstm" && options.kind != "transformer")
    throw Error(config.source() + ": model.kind must be \"fwp\", \"lstm\" or "
                                  "\"transformer\", got \"" + options.kind + "\"");
  StackOptions &s = options.stack;
  s.layers = config.getInt("model.layers", s.layers);
  s.hidden = config.getInt("model.hidden", s.hidden);
  s.heads = config.getInt("model.heads", s.heads);
  s.ffMult = config.getInt("model.ff_mult", s.ffMult);
  s.dropout = config.getDouble("model.dropout", s.dropout);
  options.positionalEncoding =
      config.getBool("model.pos_encoding", options.kind == "transformer");
  if (s.layers < 1 || s.hidden < 1 || s.heads < 1 || s.ffMult < 1)
    throw Error(config.source() +
                ": model.layers, hidden, heads and ff_mult must be positive");
  if (!(s.dropout >= 0 && s.dropout < 1))
    throw Error(config.source() + ": model.dropout must be in [0, 1)");
  if (options.kind == "lstm") {
    options.embedding = config.getInt("model.embedding", s.hidden);
    config.markUsed("model.layer");
    config.markUsed("model.artifact");
    config.markUsed("model.reference");
    config.markUsed("model.d_ff");
  } else {
    options.embedding = s.hidden;
    config.markUsed("model.embedding");
  }
  if (options.kind == "fwp") {
    if (s.hidden % s.heads != 0)
      throw Error(config.source() + ": model.hidden (" + std::to_string(s.hidden) +
                  ") must be a multiple of model.heads (" + std::to_string(s.heads) +
                  ")");
    options.layer.name = config.getString("model.layer");
    bool reference = config.getBool("model.reference", false);
    std::string artifact = config.getString("model.artifact", "");
    options.layer.artifact = reference ? "" : artifact;
    options.fastFeedForward = config.getInt("model.d_ff", 4 * s.hidden / s.heads);
  } else if (options.kind == "transformer") {
    config.markUsed("model.layer");
    config.markUsed("model.artifact");
    config.markUsed("model.reference");
    config.markUsed("model.d_ff");
  }
  return options;
}

std::shared_ptr<SequenceStackImpl> makeStack(const ModelOptions &options,
                                             const torch::Device &device) {
  if (options.kind == "fwp") {
    // The sizes the model offers; a layer uses those it names (its
    // manifest's or its reference's dims), whatever the layer is.
    Dims dims = {{"d", options.stack.hidden / options.stack.heads},
                 {"d_ff", options.fastFeedForward}};
    auto layer = makeFastWeightLayer(options.layer, dims, device);
    return std::make_shared<FastWeightStackImpl>(options.stack, std::move(layer));
  }
  if (options.kind == "lstm")
    return std::make_shared<LstmStackImpl>(options.embedding, options.stack);
  if (options.kind == "transformer")
    return std::make_shared<TransformerStackImpl>(options.stack);
  throw Error("unknown model kind '" + options.kind + "'");
}

TokenModelImpl::TokenModelImpl(const ModelOptions &options, const torch::Device &device)
    : options_(options) {
  stack_ = register_module("stack", makeStack(options, device));
  embedding_ = register_module(
      "embedding", torch::nn::Embedding(options.inputVocab, stack_->inputSize()));
  head_ = register_module("head",
                          torch::nn::Linear(stack_->outputSize(), options.classes));
}

torch::Tensor TokenModelImpl::forward(const torch::Tensor &tokens,
                                      const StackState *init, StackState *final) {
  torch::Tensor x = embedding_(tokens);
  if (options_.positionalEncoding)
    x = x + sinusoidalPositions(tokens.size(1), x.size(2), x.options()).unsqueeze(0);
  return head_(stack_->forward(x, init, final));
}

int64_t countParameters(const torch::nn::Module &module) {
  int64_t total = 0;
  for (const auto &p : module.parameters())
    if (p.requires_grad())
      total += p.numel();
  return total;
}

torch::Device parseDevice(const std::string &name) {
  if (name == "cpu")
    return torch::kCPU;
  if (name == "cuda" || startsWith(name, "cuda:")) {
    if (!torch::cuda::is_available())
      throw Error("--device " + name +
                  ": CUDA is not available here (no GPU or driver found, or a "
                  "CPU-only LibTorch); use --device cpu");
    torch::Device device(name);
    if (device.has_index() &&
        device.index() >= static_cast<int64_t>(torch::cuda::device_count()))
      throw Error("--device " + name + ": only " +
                  std::to_string(torch::cuda::device_count()) +
                  " CUDA device(s) present");
    return device;
  }
  throw Error("--device " + name + ": expected cpu, cuda or cuda:<index>");
}

} // namespace fwp::train
