//===- Network.cpp - IMPALA agent: ResNet torso, memory core, heads -------===//
#include "fwp/rl/Network.h"

#include "fwp/rl/AtariEnv.h" // frame sizes

#include "fwp/runtime/Layer.h"
#include "fwp/train/Model.h"

#include <algorithm>
#include <cmath>

namespace fwp::rl {

const std::vector<std::string> &coreNames() {
  static const std::vector<std::string> names = {"lstm",      "linear_transformer", "delta_net",
                                                 "delta_rnn", "rdn",                "none"};
  return names;
}

namespace {
bool isFastWeightCore(const std::string &core) {
  return core == "linear_transformer" || core == "delta_net" || core == "delta_rnn" ||
         core == "rdn";
}

/// Zeroes the batch entries where an episode began; `notDone` is [B].
torch::Tensor maskBatch(const torch::Tensor &state, const torch::Tensor &notDone) {
  std::vector<int64_t> shape(state.dim(), 1);
  shape[0] = notDone.size(0);
  return state * notDone.view(shape);
}
} // namespace

std::string NetworkConfig::resolvedBackprop() const {
  if (backprop != "auto")
    return backprop;
  return isFastWeightCore(core) ? "truncated" : "full";
}

void NetworkConfig::validate() const {
  const auto &names = coreNames();
  if (std::find(names.begin(), names.end(), core) == names.end()) {
    std::string known;
    for (const auto &n : names)
      known += (known.empty() ? "" : ", ") + n;
    throw Error("model.core: unknown core '" + core + "' (known: " + known + ")");
  }
  if (backprop != "auto" && backprop != "truncated" && backprop != "full")
    throw Error("model.backprop: must be auto, truncated or full, got '" + backprop + "'");
  const std::pair<const char *, int64_t> positive[] = {
      {"model.num_actions", numActions}, {"model.lstm_hidden", lstmHidden},
      {"model.hidden", hidden},          {"model.layers", layers},
      {"model.heads", heads},            {"model.head_dim", headDim},
      {"model.ff", ff}};
  for (const auto &[field, value] : positive)
    if (value <= 0)
      throw Error(std::string(field) + " must be positive, got " + std::to_string(value));
}

// --- cores ------------------------------------------------------------------

namespace {

class LstmCoreImpl : public MemoryCoreImpl {
public:
  LstmCoreImpl(int64_t inputSize, int64_t hidden, bool truncate)
      : hidden_(hidden), truncate_(truncate),
        cell_(register_module("cell", torch::nn::LSTMCell(inputSize, hidden))) {}

  CoreState initialState(int64_t batch) const override {
    return {torch::zeros({batch, hidden_}), torch::zeros({batch, hidden_})};
  }
  int64_t outputSize() const override { return hidden_; }

  torch::Tensor forward(const torch::Tensor &input, const torch::Tensor &notDone,
                        CoreState &state) override {
    std::vector<torch::Tensor> outputs;
    for (int64_t t = 0; t < input.size(0); ++t) {
      torch::Tensor h = maskBatch(state.at(0), notDone[t]);
      torch::Tensor c = maskBatch(state.at(1), notDone[t]);
      if (truncate_)
        h = h.detach(), c = c.detach();
      std::tie(h, c) = cell_(input[t], std::make_tuple(h, c));
      outputs.push_back(h);
      state = {h, c};
    }
    return torch::stack(outputs, 0);
  }

private:
  int64_t hidden_;
  bool truncate_;
  torch::nn::LSTMCell cell_;
};

/// The paper's fast-weight stack around an fwp::FastWeightLayer.
class FastWeightCoreImpl : public MemoryCoreImpl {
public:
  FastWeightCoreImpl(const NetworkConfig &config, int64_t inputSize)
      : config_(config), dims_{{"d", config.headDim}},
        layer_(train::makeFastWeightLayer({config.core, config.artifact}, dims_, torch::kCPU)),
        truncate_(config.resolvedBackprop() == "truncated") {
    const LayerSignature &signature = layer_->signature();
    for (const TensorSpec &spec : signature.seq) {
      int64_t size = 1;
      for (int64_t s : resolveShape(spec, dims_))
        size *= s;
      seqSizes_.emplace_back(spec.name, size);
      perHead_ += size;
    }
    for (const TensorSpec &spec : signature.states)
      stateShapes_.emplace_back(spec.name, resolveShape(spec, dims_));
    int64_t outputPerHead = 1;
    for (int64_t s : resolveShape(signature.output, dims_))
      outputPerHead *= s;

    const int64_t width = config.hidden, heads = config.heads;
    inputProj_ = register_module("input_proj", torch::nn::Linear(inputSize, width));
    for (int64_t l = 0; l < config.layers; ++l) {
      const std::string p = "layer" + std::to_string(l) + "_";
      Sublayers s;
      s.fwNorm = register_module(p + "fw_norm", torch::nn::LayerNorm(
                                                    torch::nn::LayerNormOptions({width})));
      s.slow = register_module(
          p + "slow", torch::nn::Linear(torch::nn::LinearOptions(width, heads * perHead_).bias(false)));
      s.out = register_module(p + "out", torch::nn::Linear(torch::nn::LinearOptions(
                                                               heads * outputPerHead, width)
                                                               .bias(false)));
      s.ffNorm = register_module(p + "ff_norm", torch::nn::LayerNorm(
                                                    torch::nn::LayerNormOptions({width})));
      s.ff1 = register_module(p + "ff1", torch::nn::Linear(width, config.ff));
      s.ff2 = register_module(p + "ff2", torch::nn::Linear(config.ff, width));
      // Slow per-head params of the layer (RDN's R_q, R_k, R_v, r_b):
      // N(0, 1/sqrt(d)) as in the paper's code.
      for (const TensorSpec &spec : signature.params) {
        std::vector<int64_t> shape = {heads};
        for (int64_t v : resolveShape(spec, dims_))
          shape.push_back(v);
        torch::Tensor param = torch::randn(shape) / std::sqrt(static_cast<double>(config.headDim));
        s.params[spec.name] = register_parameter(p + spec.name, param);
      }
      sublayers_.push_back(std::move(s));
    }
  }

  CoreState initialState(int64_t batch) const override {
    CoreState state;
    for (int64_t l = 0; l < config_.layers; ++l)
      for (const auto &[name, shape] : stateShapes_) {
        std::vector<int64_t> full = {batch, config_.heads};
        full.insert(full.end(), shape.begin(), shape.end());
        state.push_back(torch::zeros(full));
      }
    return state;
  }
  int64_t outputSize() const override { return config_.hidden; }

  torch::Tensor forward(const torch::Tensor &input, const torch::Tensor &notDone,
                        CoreState &state) override {
    const int64_t steps = input.size(0), batch = input.size(1), heads = config_.heads;
    const size_t statesPerLayer = stateShapes_.size();
    if (state.size() != statesPerLayer * sublayers_.size())
      throw Error("fast-weight core: expected " +
                  std::to_string(statesPerLayer * sublayers_.size()) + " state tensors, got " +
                  std::to_string(state.size()));
    const torch::Tensor x = inputProj_(input);
    std::vector<torch::Tensor> outputs;
    for (int64_t t = 0; t < steps; ++t) {
      for (torch::Tensor &s : state) {
        s = maskBatch(s, notDone[t]);
        if (truncate_)
          s = s.detach();
      }
      torch::Tensor h = x[t];
      for (size_t l = 0; l < sublayers_.size(); ++l) {
        Sublayers &s = sublayers_[l];
        // Per-head slices of the slow projection, one step: [B, H, 1, n].
        const torch::Tensor projected = s.slow(s.fwNorm(h)).view({batch, heads, perHead_});
        TensorMap inputs;
        int64_t offset = 0;
        for (const auto &[name, size] : seqSizes_) {
          inputs[name] = projected.narrow(2, offset, size).unsqueeze(2);
          offset += size;
        }
        for (const auto &[name, param] : s.params)
          inputs[name] = param;
        for (size_t i = 0; i < statesPerLayer; ++i)
          inputs["init." + stateShapes_[i].first] = state[l * statesPerLayer + i];
        TensorMap result = layer_->forward(inputs);
        for (size_t i = 0; i < statesPerLayer; ++i)
          state[l * statesPerLayer + i] = result.at("final." + stateShapes_[i].first);
        h = h + s.out(result.at("y").reshape({batch, -1}));
        h = h + s.ff2(torch::relu(s.ff1(s.ffNorm(h))));
      }
      outputs.push_back(h);
    }
    return torch::stack(outputs, 0);
  }

private:
  struct Sublayers {
    torch::nn::LayerNorm fwNorm{nullptr};
    torch::nn::Linear slow{nullptr}, out{nullptr};
    torch::nn::LayerNorm ffNorm{nullptr};
    torch::nn::Linear ff1{nullptr}, ff2{nullptr};
    std::map<std::string, torch::Tensor> params;
  };

  NetworkConfig config_;
  Dims dims_;
  std::shared_ptr<const FastWeightLayer> layer_;
  bool truncate_;
  std::vector<std::pair<std::string, int64_t>> seqSizes_;
  int64_t perHead_ = 0;
  std::vector<std::pair<std::string, std::vector<int64_t>>> stateShapes_;
  torch::nn::Linear inputProj_{nullptr};
  std::vector<Sublayers> sublayers_;
};

} // namespace

std::shared_ptr<MemoryCoreImpl> makeMemoryCore(const NetworkConfig &config, int64_t inputSize) {
  config.validate();
  if (config.core == "lstm")
    return std::make_shared<LstmCoreImpl>(inputSize, config.lstmHidden,
                                          config.resolvedBackprop() == "truncated");
  if (config.core == "none")
    return nullptr;
  return std::make_shared<FastWeightCoreImpl>(config, inputSize);
}

// --- the agent ----------------------------------------------------------------

ImpalaNetImpl::ImpalaNetImpl(const NetworkConfig &config) : config_(config) {
  config_.validate();
  int64_t channels = kFrameStack;
  const int64_t stages[] = {16, 32, 32};
  for (size_t i = 0; i < 3; ++i) {
    const int64_t out = stages[i];
    const std::string p = "stage" + std::to_string(i) + "_";
    stageConv_.push_back(register_module(
        p + "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out, 3).padding(1))));
    for (int r = 0; r < 4; ++r)
      residualConvs_.push_back(register_module(
          p + "res" + std::to_string(r),
          torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1))));
    channels = out;
  }
  pool_ = register_module("pool", torch::nn::MaxPool2d(
                                      torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  // 84 -> 42 -> 21 -> 11 after the three pools.
  fc_ = register_module("fc", torch::nn::Linear(channels * 11 * 11, 256));

  int64_t coreInput = 256 + 1 + (config_.lastActionInput ? config_.numActions : 0);
  int64_t headInput = coreInput;
  core_ = makeMemoryCore(config_, coreInput);
  if (core_) {
    register_module("core", core_);
    headInput = core_->outputSize();
  }
  policy_ = register_module("policy", torch::nn::Linear(headInput, config_.numActions));
  baseline_ = register_module("baseline", torch::nn::Linear(headInput, 1));
}

CoreState ImpalaNetImpl::initialState(int64_t batch) const {
  return core_ ? core_->initialState(batch) : CoreState{};
}

torch::Tensor ImpalaNetImpl::torso(const torch::Tensor &frames) {
  torch::Tensor x = frames.to(torch::kFloat) / 255.0;
  for (size_t i = 0; i < stageConv_.size(); ++i) {
    x = pool_(stageConv_[i](x));
    for (int block = 0; block < 2; ++block) {
      auto first = residualConvs_[4 * i + 2 * block];
      auto second = residualConvs_[4 * i + 2 * block + 1];
      x = x + second(torch::relu(first(torch::relu(x))));
    }
  }
  x = torch::relu(x).flatten(1);
  return torch::relu(fc_(x));
}

AgentOutput ImpalaNetImpl::forward(const AgentInput &input, CoreState &state, bool sample) {
  const int64_t steps = input.frame.size(0), batch = input.frame.size(1);
  const int64_t n = steps * batch;
  const torch::Tensor frames = input.frame.reshape({n, kFrameStack, kFrameSize, kFrameSize});
  std::vector<torch::Tensor> parts = {
      torso(frames), input.reward.to(torch::kFloat).clamp(-1.0, 1.0).reshape({n, 1})};
  if (config_.lastActionInput)
    parts.push_back(
        torch::one_hot(input.lastAction.reshape({n}), config_.numActions).to(torch::kFloat));
  torch::Tensor coreOutput = torch::cat(parts, 1).view({steps, batch, -1});
  if (core_)
    coreOutput = core_->forward(coreOutput, input.done.logical_not().to(torch::kFloat), state);
  const torch::Tensor flat = coreOutput.reshape({n, -1});
  const torch::Tensor logits = policy_(flat);
  const torch::Tensor baseline = baseline_(flat);
  torch::Tensor action;
  {
    torch::NoGradGuard noGrad;
    action = sample ? torch::multinomial(torch::softmax(logits, 1), 1) : logits.argmax(1);
  }
  return {action.view({steps, batch}), logits.view({steps, batch, config_.numActions}),
          baseline.view({steps, batch})};
}

void copyParameters(const torch::nn::Module &from, torch::nn::Module &to) {
  torch::NoGradGuard noGrad;
  const auto source = from.named_parameters(true);
  auto target = to.named_parameters(true);
  for (const auto &item : source)
    target[item.key()].copy_(item.value());
  const auto sourceBuffers = from.named_buffers(true);
  auto targetBuffers = to.named_buffers(true);
  for (const auto &item : sourceBuffers)
    targetBuffers[item.key()].copy_(item.value());
}

} // namespace fwp::rl
