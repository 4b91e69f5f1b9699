//===- Adaptive.cpp - Adaptive input embeddings and adaptive softmax --------===//

#include "fwp/lm/Adaptive.h"

#include "fwp/runtime/Layer.h"

#include <cmath>

namespace fwp::lm {

namespace F = torch::nn::functional;

std::vector<int64_t> effectiveCutoffs(const std::vector<int64_t> &cutoffs, int64_t vocabSize) {
  std::vector<int64_t> kept;
  int64_t previous = 0;
  for (int64_t cutoff : cutoffs) {
    if (cutoff <= previous)
      throw Error("adaptive softmax: cutoffs must be positive and strictly increasing, got " +
                  std::to_string(cutoff) + " after " + std::to_string(previous));
    previous = cutoff;
    if (cutoff < vocabSize)
      kept.push_back(cutoff);
  }
  return kept;
}

AdaptiveInputOutputImpl::AdaptiveInputOutputImpl(AdaptiveOptions options) : options_(std::move(options)) {
  if (options_.vocabSize < 1 || options_.dModel < 1)
    throw Error("adaptive softmax: vocabulary size and d_model must be positive");
  if (options_.dEmbed == 0)
    options_.dEmbed = options_.dModel;
  if (options_.divVal < 1)
    throw Error("adaptive softmax: div_val must be >= 1");
  boundaries_.push_back(0);
  for (int64_t c : effectiveCutoffs(options_.cutoffs, options_.vocabSize))
    boundaries_.push_back(c);
  boundaries_.push_back(options_.vocabSize);
  const int64_t clusters = numClusters();
  for (int64_t i = 0; i < clusters; ++i)
    if (clusterWidth(i) < 1)
      throw Error("adaptive softmax: d_embed " + std::to_string(options_.dEmbed) + " / div_val^" +
                  std::to_string(i) + " is below 1");

  torch::NoGradGuard noGrad;
  auto normal = [](std::vector<int64_t> shape, double std) {
    return torch::randn(shape) * std;
  };
  const int64_t dModel = options_.dModel;
  if (options_.divVal == 1) {
    inWeights_.push_back(register_parameter("embedding_0", normal({options_.vocabSize, options_.dEmbed}, options_.initStd)));
    if (options_.dEmbed != dModel)
      inProjs_.push_back(register_parameter("embedding_projection_0", normal({dModel, options_.dEmbed}, options_.projInitStd)));
  } else {
    for (int64_t i = 0; i < clusters; ++i) {
      const std::string n = std::to_string(i);
      int64_t rows = boundaries_[i + 1] - boundaries_[i];
      inWeights_.push_back(register_parameter("embedding_" + n, normal({rows, clusterWidth(i)}, options_.initStd)));
      inProjs_.push_back(register_parameter("embedding_projection_" + n, normal({dModel, clusterWidth(i)}, options_.projInitStd)));
    }
  }
  if (!options_.tieWeights) {
    if (options_.divVal == 1) {
      outWeights_.push_back(register_parameter("output_0", normal({options_.vocabSize, options_.dEmbed}, options_.initStd)));
    } else {
      for (int64_t i = 0; i < clusters; ++i)
        outWeights_.push_back(register_parameter("output_" + std::to_string(i),
                                                 normal({boundaries_[i + 1] - boundaries_[i], clusterWidth(i)}, options_.initStd)));
    }
  }
  outBias_ = register_parameter("output_bias", torch::zeros({options_.vocabSize}));
  // Output projections: present when the cluster width differs from d_model
  // (always for divVal > 1); tails tied to the input side on request.
  for (int64_t i = 0; i < clusters; ++i) {
    bool needed = options_.divVal > 1 || options_.dEmbed != dModel;
    bool tied = options_.tieProjections && i > 0;
    if (needed && !tied)
      outProjs_.push_back(register_parameter("output_projection_" + std::to_string(i),
                                             normal({dModel, clusterWidth(i)}, options_.projInitStd)));
    else
      outProjs_.push_back(torch::Tensor());
  }
  if (clusters > 1) {
    clusterWeight_ = register_parameter("cluster_weight", normal({clusters - 1, clusterWidth(0)}, options_.initStd));
    clusterBias_ = register_parameter("cluster_bias", torch::zeros({clusters - 1}));
  }
}

int64_t AdaptiveInputOutputImpl::clusterWidth(int64_t cluster) const {
  int64_t width = options_.dEmbed;
  for (int64_t i = 0; i < cluster; ++i)
    width /= options_.divVal;
  return width;
}

torch::Tensor AdaptiveInputOutputImpl::inputWeight(int64_t cluster) const {
  if (options_.divVal == 1)
    return inWeights_[0].narrow(0, boundaries_[cluster], boundaries_[cluster + 1] - boundaries_[cluster]);
  return inWeights_[cluster];
}

torch::Tensor AdaptiveInputOutputImpl::inputProjection(int64_t cluster) const {
  if (options_.divVal == 1)
    return inProjs_.empty() ? torch::Tensor() : inProjs_[0];
  return inProjs_[cluster];
}

torch::Tensor AdaptiveInputOutputImpl::outputWeight(int64_t cluster) const {
  if (options_.tieWeights)
    return inputWeight(cluster);
  if (options_.divVal == 1)
    return outWeights_[0].narrow(0, boundaries_[cluster], boundaries_[cluster + 1] - boundaries_[cluster]);
  return outWeights_[cluster];
}

torch::Tensor AdaptiveInputOutputImpl::outputBias(int64_t cluster) const {
  return outBias_.narrow(0, boundaries_[cluster], boundaries_[cluster + 1] - boundaries_[cluster]);
}

torch::Tensor AdaptiveInputOutputImpl::outputProjection(int64_t cluster) const {
  if (outProjs_[cluster].defined())
    return outProjs_[cluster];
  if (options_.tieProjections && cluster > 0)
    return inputProjection(cluster);
  return torch::Tensor();
}

torch::Tensor AdaptiveInputOutputImpl::embed(const torch::Tensor &ids) const {
  const double scale = std::sqrt(static_cast<double>(options_.dModel));
  if (options_.divVal == 1) {
    auto out = F::embedding(ids, inWeights_[0]);
    if (!inProjs_.empty())
      out = torch::matmul(out, inProjs_[0].t());
    return out * scale;
  }
  auto flat = ids.reshape({-1});
  auto out = torch::zeros({flat.size(0), options_.dModel}, inWeights_[0].options());
  for (int64_t i = 0; i < numClusters(); ++i) {
    auto index = ((flat >= boundaries_[i]) & (flat < boundaries_[i + 1])).nonzero().reshape({-1});
    if (index.numel() == 0)
      continue;
    auto local = flat.index_select(0, index) - boundaries_[i];
    auto vectors = torch::matmul(F::embedding(local, inWeights_[i]), inProjs_[i].t());
    out = out.index_copy(0, index, vectors);
  }
  auto shape = ids.sizes().vec();
  shape.push_back(options_.dModel);
  return out.view(shape) * scale;
}

torch::Tensor AdaptiveInputOutputImpl::clusterLogits(const torch::Tensor &hidden, int64_t cluster) const {
  auto weight = outputWeight(cluster);
  auto bias = outputBias(cluster);
  if (cluster == 0 && numClusters() > 1) {
    weight = torch::cat({weight, clusterWeight_}, 0);
    bias = torch::cat({bias, clusterBias_}, 0);
  }
  auto projection = outputProjection(cluster);
  auto projected = projection.defined() ? torch::matmul(hidden, projection) : hidden;
  return torch::addmm(bias, projected, weight.t());
}

torch::Tensor AdaptiveInputOutputImpl::nll(const torch::Tensor &hidden, const torch::Tensor &targets) const {
  if (hidden.dim() != 2 || hidden.size(1) != options_.dModel)
    throw Error("adaptive softmax: hidden must be [N, " + std::to_string(options_.dModel) + "], got " +
                c10::str(hidden.sizes()));
  if (targets.dim() != 1 || targets.size(0) != hidden.size(0))
    throw Error("adaptive softmax: targets must be [" + std::to_string(hidden.size(0)) + "], got " +
                c10::str(targets.sizes()));
  const int64_t shortlist = boundaries_[1];
  auto headLogProbs = torch::log_softmax(clusterLogits(hidden, 0), 1);
  if (numClusters() == 1)
    return -headLogProbs.gather(1, targets.unsqueeze(1)).squeeze(1);

  auto result = torch::zeros({hidden.size(0)}, hidden.options());
  for (int64_t i = 0; i < numClusters(); ++i) {
    auto index = ((targets >= boundaries_[i]) & (targets < boundaries_[i + 1])).nonzero().reshape({-1});
    if (index.numel() == 0)
      continue;
    auto local = targets.index_select(0, index) - boundaries_[i];
    auto head = headLogProbs.index_select(0, index);
    torch::Tensor logProb;
    if (i == 0) {
      logProb = head.gather(1, local.unsqueeze(1)).squeeze(1);
    } else {
      auto tail = torch::log_softmax(clusterLogits(hidden.index_select(0, index), i), 1);
      logProb = head.select(1, shortlist + i - 1) + tail.gather(1, local.unsqueeze(1)).squeeze(1);
    }
    result = result.index_copy(0, index, -logProb);
  }
  return result;
}

torch::Tensor AdaptiveInputOutputImpl::logProbabilities(const torch::Tensor &hidden) const {
  const int64_t shortlist = boundaries_[1];
  auto head = torch::log_softmax(clusterLogits(hidden, 0), 1);
  std::vector<torch::Tensor> parts{head.narrow(1, 0, shortlist)};
  for (int64_t i = 1; i < numClusters(); ++i) {
    auto tail = torch::log_softmax(clusterLogits(hidden, i), 1);
    parts.push_back(tail + head.narrow(1, shortlist + i - 1, 1));
  }
  return torch::cat(parts, 1);
}

torch::Tensor sinusoidalPositions(const torch::Tensor &positions, int64_t width) {
  if (width % 2 != 0)
    throw Error("sinusoidal positions: width " + std::to_string(width) + " must be even");
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(positions.device());
  auto inverse = torch::pow(10000.0, -torch::arange(0, width, 2, options) / static_cast<double>(width));
  auto angles = torch::outer(positions.to(torch::kFloat32), inverse);
  return torch::cat({torch::sin(angles), torch::cos(angles)}, -1);
}

} // namespace fwp::lm
