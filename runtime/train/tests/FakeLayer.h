// A test-only FastWeightLayer with a trivial, hand-checkable recurrence, used
// to test the model stack's plumbing (slicing of the slow projection, param
// and state passing, output merge) independently of the paper layers:
//   seq   a [d], g [1];  params P [d];  state S [d]
//   S_t = S_{t-1} + g_t * a_t + P;   y_t = S_t
#pragma once

#include "fwp/runtime/Layer.h"

namespace fwp::train::test {

class FakeLayer : public FastWeightLayer {
public:
  explicit FakeLayer(int64_t d) : dims_{{"d", d}} {
    signature_.layer = "fake";
    signature_.seq = {{"a", {"d"}}, {"g", {"1"}}};
    signature_.params = {{"P", {"d"}}};
    signature_.states = {{"S", {"d"}}};
    signature_.output = {"y", {"d"}};
  }
  const LayerSignature &signature() const override { return signature_; }
  const Dims &dims() const override { return dims_; }
  TensorMap forward(const TensorMap &inputs) const override {
    const torch::Tensor &a = inputs.at("a"); // [B, H, T, d]
    const torch::Tensor &g = inputs.at("g"); // [B, H, T, 1]
    const torch::Tensor &P = inputs.at("P"); // [H, d]
    if (a.size(3) != dims_.at("d") || g.size(3) != 1 || P.dim() != 2)
      throw Error("fake layer: bad shapes");
    auto init = inputs.find("init.S");
    torch::Tensor S = init != inputs.end()
                          ? init->second
                          : torch::zeros({a.size(0), a.size(1), a.size(3)}, a.options());
    std::vector<torch::Tensor> ys;
    for (int64_t t = 0; t < a.size(2); ++t) {
      S = S + g.select(2, t) * a.select(2, t) + P.unsqueeze(0);
      ys.push_back(S);
    }
    return {{"y", torch::stack(ys, 2)}, {"final.S", S}};
  }

private:
  LayerSignature signature_;
  Dims dims_;
};

} // namespace fwp::train::test
