//===- Adaptive.h - Adaptive input embeddings and adaptive softmax -*- C++ -*-===//
//
// The word embedding and output layer of the WikiText-103 models, as in the
// Transformer-XL code the paper builds on (Baevski & Auli's adaptive input,
// Grave et al.'s adaptive softmax):
//
// - The vocabulary (ordered by frequency) is cut at `cutoffs` into clusters:
//   cluster 0 ("head" shortlist) = [0, c1), cluster i = [c_i, c_{i+1}).
//   Cutoffs >= the vocabulary size are dropped, so a small vocabulary gets
//   fewer clusters (a plain softmax when none is left).
// - Cluster i has embeddings of width d_embed / div^i (div = `divVal`),
//   projected to d_model; with divVal = 1 all clusters share one table and
//   one projection (none when d_embed == d_model). Embeddings are scaled by
//   sqrt(d_model).
// - The softmax head scores the shortlist words and one logit per tail
//   cluster; log p(w) = log p_head(cluster(w)) + log p_cluster(w).
// - tieWeights: the output word vectors are the input embeddings of the same
//   cluster; tieProjections: the tail clusters' output projections are the
//   input projections (the head's stays separate, Transformer-XL's tie_projs).
//
//===----------------------------------------------------------------------===//
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace fwp::lm {

struct AdaptiveOptions {
  int64_t vocabSize = 0;
  int64_t dModel = 0;
  int64_t dEmbed = 0; ///< 0: dModel
  std::vector<int64_t> cutoffs = {20000, 40000, 200000};
  int64_t divVal = 1;
  bool tieWeights = true;
  bool tieProjections = true;
  double initStd = 0.02;     ///< embeddings and cluster logits
  double projInitStd = 0.01; ///< projections
};

/// The cutoffs that apply to a vocabulary of `vocabSize` words: those >= the
/// size are dropped. Throws fwp::Error unless they are positive and strictly
/// increasing.
std::vector<int64_t> effectiveCutoffs(const std::vector<int64_t> &cutoffs, int64_t vocabSize);

class AdaptiveInputOutputImpl : public torch::nn::Module {
public:
  explicit AdaptiveInputOutputImpl(AdaptiveOptions options);

  /// ids int64 [...] -> embeddings [..., dModel] (already scaled).
  torch::Tensor embed(const torch::Tensor &ids) const;
  /// hidden [N, dModel], targets int64 [N] -> -log p(target) [N], in order.
  torch::Tensor nll(const torch::Tensor &hidden, const torch::Tensor &targets) const;
  /// hidden [N, dModel] -> log p(w) for every word [N, vocabSize].
  torch::Tensor logProbabilities(const torch::Tensor &hidden) const;

  const AdaptiveOptions &options() const { return options_; }
  /// Cluster boundaries [0, c1, ..., vocabSize] after dropping cutoffs.
  const std::vector<int64_t> &boundaries() const { return boundaries_; }
  int64_t numClusters() const { return static_cast<int64_t>(boundaries_.size()) - 1; }
  int64_t clusterWidth(int64_t cluster) const; ///< d_embed / div^i

  // Parameters of cluster i, as the formulas above use them (tests build a
  // brute-force softmax from these). An undefined projection is the identity.
  torch::Tensor inputWeight(int64_t cluster) const;     ///< [n_i, d_i]
  torch::Tensor inputProjection(int64_t cluster) const; ///< [dModel, d_i] or undefined
  torch::Tensor outputWeight(int64_t cluster) const;    ///< [n_i, d_i]
  torch::Tensor outputBias(int64_t cluster) const;      ///< [n_i]
  torch::Tensor outputProjection(int64_t cluster) const; ///< [dModel, d_i] or undefined
  /// Head logits of the tail clusters 1..numClusters-1: [numClusters-1, d_0], [numClusters-1].
  torch::Tensor clusterWeight() const { return clusterWeight_; }
  torch::Tensor clusterBias() const { return clusterBias_; }

private:
  /// hidden [N, dModel] -> logits of cluster i [N, n_i] (with the cluster
  /// logits appended for i = 0).
  torch::Tensor clusterLogits(const torch::Tensor &hidden, int64_t cluster) const;

  AdaptiveOptions options_;
  std::vector<int64_t> boundaries_;
  // Input side: divVal == 1 keeps one table [V, d] and at most one projection.
  std::vector<torch::Tensor> inWeights_, inProjs_;
  // Output side: untied tensors only (tied ones are read from the input side).
  std::vector<torch::Tensor> outWeights_, outProjs_;
  torch::Tensor outBias_; ///< [V]
  torch::Tensor clusterWeight_, clusterBias_;
};
TORCH_MODULE(AdaptiveInputOutput);

/// Transformer-XL's sinusoidal position encodings: for positions p [L] and
/// width d (even), [L, d] = [sin(p w), cos(p w)], w_j = 10000^(-2j/d).
torch::Tensor sinusoidalPositions(const torch::Tensor &positions, int64_t width);

} // namespace fwp::lm
