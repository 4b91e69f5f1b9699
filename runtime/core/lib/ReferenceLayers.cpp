//===- ReferenceLayers.cpp - The fast-weight layers in eager LibTorch -----===//
//
// The test oracle and CPU fallback: each layer is MODELS.md's per-head step
// written literally, looped over time, batched over the leading [B, H] dims:
// the paper's six layers, then the three whose fast weights decay
// (gated_delta_net, retnet, gla: MODELS.md, "Beyond the paper") and
// delta_product (docs/models.md), which the runtime otherwise knows only as
// .mlir files compiled by fwp-compile.
// Gradients come from torch autograd, so nothing here has a hand-written
// backward.
//
//===----------------------------------------------------------------------===//
#include "fwp/runtime/Layer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

namespace fwp {
namespace {

using torch::Tensor;

// --- MODELS.md's notation; every tensor is [B, H, n] (or [B, H, n, m]) -----

Tensor elu1(const Tensor &x) { return torch::elu(x) + 1; }
Tensor sumNorm(const Tensor &x) { return x / x.sum(-1, /*keepdim=*/true); }
Tensor sumNormEps(const Tensor &x) { return x / (x.sum(-1, /*keepdim=*/true) + 1e-5); }
Tensor softmax(const Tensor &x) { return torch::softmax(x, -1); }
Tensor sigma(const Tensor &x) { return torch::sigmoid(x); }

/// l2n(x) = x / sqrt(Σ x² + 1e-6), the key and query map of gated_delta_net
/// and delta_product.
Tensor l2Norm(const Tensor &x) { return x / torch::sqrt(x.pow(2).sum(-1, /*keepdim=*/true) + 1e-6); }

/// φ of delta_net, delta_rnn and delta_lstm: sumnorm(elu1(x)).
Tensor phi(const Tensor &x) { return sumNorm(elu1(x)); }

/// read(W, q)[m] = Σ_e W[e, m] q[e]  (W key-major, [.., e, m]).
Tensor read(const Tensor &W, const Tensor &q) {
  return torch::matmul(q.unsqueeze(-2), W).squeeze(-2);
}

/// k ⊗ v, [.., e, m].
Tensor outerProduct(const Tensor &k, const Tensor &v) { return k.unsqueeze(-1) * v.unsqueeze(-2); }

/// delta(W, k, v, β) = W + k ⊗ β (v − read(W, k)); β is [B, H, 1].
Tensor deltaWrite(const Tensor &W, const Tensor &k, const Tensor &v, const Tensor &beta) {
  return W + outerProduct(k, beta * (v - read(W, k)));
}

/// LayerNorm over the last dim (biased variance, eps 1e-5) with per-head
/// weight and bias [H, d] broadcast over the batch.
Tensor layerNorm(const Tensor &x, const Tensor &weight, const Tensor &bias) {
  const Tensor mean = x.mean(-1, /*keepdim=*/true);
  const Tensor centred = x - mean;
  const Tensor variance = centred.pow(2).mean(-1, /*keepdim=*/true);
  return centred / torch::sqrt(variance + 1e-5) * weight + bias;
}

// --- signatures ------------------------------------------------------------

TensorSpec spec(std::string name, std::vector<std::string> shape) {
  return TensorSpec{std::move(name), std::move(shape)};
}
TensorSpec vec(std::string name, const std::string &dim = "d") { return spec(std::move(name), {dim}); }
TensorSpec scalar(std::string name) { return spec(std::move(name), {"1"}); }
TensorSpec matrix(std::string name, const std::string &rows = "d", const std::string &cols = "d") {
  return spec(std::move(name), {rows, cols});
}

/// The params' initial values a layer asks for (FastWeightLayer::paramInits).
using ParamInits = std::map<std::string, std::string>;

/// One time step of a layer: reads this step's seq slices `x` ([B, H, n])
/// and the params ([H, ...]), replaces the states in `state`, returns y_t.
using StepFn = std::function<Tensor(const TensorMap &x, const TensorMap &params, TensorMap &state)>;

class ReferenceLayer final : public FastWeightLayer {
public:
  ReferenceLayer(LayerSignature signature, Dims dims, StepFn step, ParamInits paramInits)
      : signature_(std::move(signature)), dims_(std::move(dims)), step_(std::move(step)),
        paramInits_(std::move(paramInits)) {}

  const LayerSignature &signature() const override { return signature_; }
  const Dims &dims() const override { return dims_; }
  ParamInits paramInits() const override { return paramInits_; }

  TensorMap forward(const TensorMap &inputs) const override {
    const CallShape call = validateInputs(signature_, dims_, inputs);
    const auto options = torch::TensorOptions().dtype(call.dtype).device(call.device);

    TensorMap params;
    for (const auto &param : signature_.params)
      params[param.name] = inputs.at(param.name);

    TensorMap state;
    for (const auto &stateSpec : signature_.states) {
      auto given = inputs.find(initName(stateSpec.name));
      if (given != inputs.end()) {
        state[stateSpec.name] = given->second;
      } else {
        std::vector<int64_t> shape{call.batch, call.heads};
        for (int64_t size : resolveShape(stateSpec, dims_))
          shape.push_back(size);
        state[stateSpec.name] = torch::zeros(shape, options);
      }
    }

    std::vector<Tensor> outputs;
    for (int64_t t = 0; t < call.steps; ++t) {
      TensorMap x;
      for (const auto &seqSpec : signature_.seq)
        x[seqSpec.name] = inputs.at(seqSpec.name).select(2, t);
      outputs.push_back(step_(x, params, state));
    }

    TensorMap result;
    if (outputs.empty()) {
      std::vector<int64_t> shape{call.batch, call.heads, 0};
      for (int64_t size : resolveShape(signature_.output, dims_))
        shape.push_back(size);
      result[signature_.output.name] = torch::zeros(shape, options);
    } else {
      result[signature_.output.name] = torch::stack(outputs, 2);
    }
    for (const auto &stateSpec : signature_.states)
      result[finalName(stateSpec.name)] = state.at(stateSpec.name);
    return result;
  }

private:
  LayerSignature signature_;
  Dims dims_;
  StepFn step_;
  ParamInits paramInits_;
};

// --- the six layers (MODELS.md, in its order) -------------------------------

LayerSignature linearTransformerSignature() {
  return {"linear_transformer", {vec("q"), vec("k"), vec("v")}, {}, {matrix("W"), vec("z")}, vec("y")};
}
Tensor linearTransformerStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  const Tensor phiK = elu1(x.at("k"));
  const Tensor phiQ = elu1(x.at("q"));
  s["W"] = s.at("W") + phiK.unsqueeze(-1) * x.at("v").unsqueeze(-2);
  s["z"] = s.at("z") + phiK;
  const Tensor normaliser = (s.at("z") * phiQ).sum(-1, /*keepdim=*/true) + 1e-5;
  return read(s.at("W"), phiQ) / normaliser;
}

LayerSignature deltaNetSignature() {
  return {"delta_net", {vec("q"), vec("k"), vec("v"), scalar("beta")}, {}, {matrix("W")}, vec("y")};
}
Tensor deltaNetStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  s["W"] = deltaWrite(s.at("W"), phi(x.at("k")), x.at("v"), sigma(x.at("beta")));
  return read(s.at("W"), phi(x.at("q")));
}

LayerSignature deltaMlpSignature() {
  return {"delta_mlp",
          {vec("q"), vec("k1"), vec("v1", "d_ff"), scalar("beta1"), vec("k2", "d_ff"), vec("v2"),
           scalar("beta2")},
          {vec("ln_weight"), vec("ln_bias")},
          {matrix("W1", "d", "d_ff"), matrix("W2", "d_ff", "d")},
          vec("y")};
}
Tensor deltaMlpStep(const TensorMap &x, const TensorMap &p, TensorMap &s) {
  const Tensor a = sumNormEps(elu1(layerNorm(x.at("q"), p.at("ln_weight"), p.at("ln_bias"))));
  s["W1"] = deltaWrite(s.at("W1"), sumNormEps(elu1(x.at("k1"))), x.at("v1"), sigma(x.at("beta1")));
  const Tensor g = read(s.at("W1"), a);
  s["W2"] = deltaWrite(s.at("W2"), sumNormEps(elu1(x.at("k2"))), x.at("v2"), sigma(x.at("beta2")));
  return read(s.at("W2"), sumNormEps(elu1(g))) + x.at("q");
}

LayerSignature deltaRnnSignature() {
  return {"delta_rnn",
          {vec("q"), vec("k"), vec("v"), scalar("beta"), vec("k_r"), vec("v_r"), scalar("beta_r")},
          {},
          {matrix("W"), matrix("R"), vec("y")},
          vec("y")};
}
Tensor deltaRnnStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  s["W"] = deltaWrite(s.at("W"), phi(x.at("k")), x.at("v"), sigma(x.at("beta")));
  const Tensor z = read(s.at("W"), phi(x.at("q")));
  s["R"] = deltaWrite(s.at("R"), softmax(x.at("k_r")), x.at("v_r"), sigma(x.at("beta_r")));
  s["y"] = z + read(s.at("R"), softmax(s.at("y")));
  return s.at("y");
}

const char *const kLstmGates[] = {"i", "u", "o"};

LayerSignature deltaLstmSignature() {
  LayerSignature sig{"delta_lstm", {}, {}, {}, vec("y")};
  for (std::string g : kLstmGates)
    for (TensorSpec each : {vec("q_" + g), vec("k_" + g), vec("v_" + g), scalar("beta_" + g),
                            vec("k_r" + g), vec("v_r" + g), scalar("beta_r" + g)})
      sig.seq.push_back(each);
  for (std::string g : kLstmGates)
    sig.states.push_back(matrix("W_" + g));
  for (std::string g : kLstmGates)
    sig.states.push_back(matrix("R_" + g));
  sig.states.push_back(vec("h"));
  sig.states.push_back(vec("c"));
  return sig;
}
Tensor deltaLstmStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  const Tensor recurrentKey = softmax(s.at("h")); // s = softmax(h_{t-1})
  TensorMap preActivation;                         // read(R_g,t, s) + z_g
  for (std::string g : kLstmGates) {
    const std::string W = "W_" + g, R = "R_" + g;
    s[W] = deltaWrite(s.at(W), phi(x.at("k_" + g)), x.at("v_" + g), sigma(x.at("beta_" + g)));
    const Tensor z = read(s.at(W), phi(x.at("q_" + g)));
    s[R] = deltaWrite(s.at(R), softmax(x.at("k_r" + g)), x.at("v_r" + g),
                      sigma(x.at("beta_r" + g)));
    preActivation[g] = read(s.at(R), recurrentKey) + z;
  }
  const Tensor inputGate = sigma(preActivation.at("i"));
  const Tensor update = preActivation.at("u");
  const Tensor outputGate = sigma(preActivation.at("o"));
  s["c"] = inputGate * update + (1 - inputGate) * s.at("c");
  s["h"] = outputGate * s.at("c");
  return s.at("h");
}

LayerSignature rdnSignature() {
  return {"rdn",
          {vec("q"), vec("k"), vec("v"), scalar("beta")},
          {matrix("R_q"), matrix("R_k"), matrix("R_v"), vec("r_b")},
          {matrix("W"), vec("y")},
          vec("y")};
}
Tensor rdnStep(const TensorMap &x, const TensorMap &p, TensorMap &s) {
  const Tensor feedback = torch::tanh(s.at("y")); // s_t = tanh(y_{t-1})
  // (s R)[j] = Σ_i s[i] R[i, j], which is read(R, s).
  const Tensor q = softmax(x.at("q") + read(p.at("R_q"), feedback));
  const Tensor k = softmax(x.at("k") + read(p.at("R_k"), feedback));
  const Tensor v = x.at("v") + read(p.at("R_v"), feedback);
  const Tensor beta = sigma(x.at("beta") + (feedback * p.at("r_b")).sum(-1, /*keepdim=*/true));
  s["W"] = deltaWrite(s.at("W"), k, v, beta);
  s["y"] = read(s.at("W"), q);
  return s.at("y");
}

// --- the layers beyond the paper (MODELS.md "Beyond the paper"; ----------
// --- delta_product as docs/models.md) ----------------------------------------

LayerSignature gatedDeltaNetSignature() {
  return {"gated_delta_net",
          {vec("q"), vec("k"), vec("v"), scalar("beta"), scalar("alpha")},
          {},
          {matrix("W")},
          vec("y")};
}
Tensor gatedDeltaNetStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  const Tensor decay = sigma(x.at("alpha")).unsqueeze(-1); // a_t, [B, H, 1, 1]
  s["W"] = deltaWrite(decay * s.at("W"), l2Norm(x.at("k")), x.at("v"), sigma(x.at("beta")));
  const Tensor q = x.at("q");
  return read(s.at("W"), l2Norm(q) / std::sqrt(static_cast<double>(q.size(-1))));
}

LayerSignature retnetSignature() {
  return {"retnet", {vec("q"), vec("k"), vec("v")}, {scalar("decay")}, {matrix("W")}, vec("y")};
}
Tensor retnetStep(const TensorMap &x, const TensorMap &p, TensorMap &s) {
  const Tensor gamma = sigma(p.at("decay")).unsqueeze(-1); // [H, 1, 1] against W's [B, H, d, d]
  s["W"] = gamma * s.at("W") + outerProduct(x.at("k"), x.at("v"));
  return read(s.at("W"), x.at("q"));
}

LayerSignature glaSignature() {
  return {"gla", {vec("q"), vec("k"), vec("v"), vec("g")}, {}, {matrix("W")}, vec("y")};
}
Tensor glaStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  const Tensor rowDecay = sigma(x.at("g")).unsqueeze(-1); // a_t[e] for key row e, [B, H, d, 1]
  s["W"] = rowDecay * s.at("W") + outerProduct(x.at("k"), x.at("v"));
  return read(s.at("W"), x.at("q"));
}

LayerSignature deltaProductSignature() {
  return {"delta_product",
          {vec("q"), vec("k1"), vec("v1"), scalar("beta1"), vec("k2"), vec("v2"), scalar("beta2")},
          {},
          {matrix("W")},
          vec("y")};
}
Tensor deltaProductStep(const TensorMap &x, const TensorMap &, TensorMap &s) {
  s["W"] = deltaWrite(s.at("W"), l2Norm(x.at("k1")), x.at("v1"), sigma(x.at("beta1")));
  s["W"] = deltaWrite(s.at("W"), l2Norm(x.at("k2")), x.at("v2"), sigma(x.at("beta2")));
  return read(s.at("W"), l2Norm(x.at("q")));
}

struct LayerEntry {
  const char *name;
  LayerSignature (*signature)();
  Tensor (*step)(const TensorMap &, const TensorMap &, TensorMap &);
  ParamInits paramInits;
};

const std::vector<LayerEntry> &layerTable() {
  static const std::vector<LayerEntry> table{
      {"linear_transformer", linearTransformerSignature, linearTransformerStep},
      {"delta_net", deltaNetSignature, deltaNetStep},
      {"delta_mlp", deltaMlpSignature, deltaMlpStep},
      {"delta_rnn", deltaRnnSignature, deltaRnnStep},
      {"delta_lstm", deltaLstmSignature, deltaLstmStep},
      {"rdn", rdnSignature, rdnStep},
      {"gated_delta_net", gatedDeltaNetSignature, gatedDeltaNetStep},
      // σ(3) = 0.95 for the first head to σ(7) = 0.999 for the last, as
      // models/retnet.mlir's fwp.param_init asks.
      {"retnet", retnetSignature, retnetStep, {{"decay", "linspace:3.0:7.0"}}},
      {"gla", glaSignature, glaStep},
      {"delta_product", deltaProductSignature, deltaProductStep},
  };
  return table;
}

const Dims kDefaultDims{{"d", 16}, {"d_ff", 64}};

} // namespace

const std::vector<std::string> &referenceLayerNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto &entry : layerTable())
      out.push_back(entry.name);
    return out;
  }();
  return names;
}

std::unique_ptr<FastWeightLayer> makeReferenceLayer(const std::string &name, const Dims &dims) {
  for (const auto &entry : layerTable()) {
    if (name != entry.name)
      continue;
    LayerSignature signature = entry.signature();
    const std::vector<std::string> known = dimNames(signature);
    Dims resolved;
    for (const auto &dim : known)
      resolved[dim] = kDefaultDims.at(dim);
    for (const auto &[dim, size] : dims) {
      if (std::find(known.begin(), known.end(), dim) == known.end()) {
        std::string list;
        for (const auto &each : known)
          list += (list.empty() ? "" : ", ") + each;
        throw Error("layer " + name + " has no dim '" + dim + "' (its dims: " + list + ")");
      }
      if (size < 1)
        throw Error("layer " + name + ": dim " + dim + " = " + std::to_string(size) +
                    " must be at least 1");
      resolved[dim] = size;
    }
    return std::make_unique<ReferenceLayer>(std::move(signature), std::move(resolved),
                                            entry.step, entry.paramInits);
  }
  std::string list;
  for (const auto &each : referenceLayerNames())
    list += (list.empty() ? "" : ", ") + each;
  throw Error("unknown layer '" + name + "' (known layers: " + list + ")");
}

} // namespace fwp
