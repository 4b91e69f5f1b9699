//===- Evaluate.cpp - Perplexity: sliding window and carried-over state -----===//

#include "fwp/lm/Evaluate.h"

#include "fwp/lm/Corpus.h"

#include <chrono>
#include <cmath>

namespace fwp::lm {

LmState detachState(const LmState &state) {
  LmState out;
  out.reserve(state.size());
  for (const TensorMap &layer : state) {
    TensorMap detached;
    for (const auto &[name, tensor] : layer)
      detached[name] = tensor.defined() ? tensor.detach() : tensor;
    out.push_back(std::move(detached));
  }
  return out;
}

double Perplexity::perplexity() const { return std::exp(loss()); }

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

torch::Tensor checkTokens(const torch::Tensor &tokens, const char *what) {
  if (!tokens.defined() || tokens.dim() != 1)
    throw Error(std::string(what) + ": tokens must be a 1-D tensor");
  if (tokens.scalar_type() != torch::kInt32 && tokens.scalar_type() != torch::kInt64)
    throw Error(std::string(what) + ": tokens must be int32 or int64");
  return tokens;
}

} // namespace

Perplexity evaluateSlidingWindow(LanguageModel &model, const torch::Tensor &tokens, int64_t context,
                                 int64_t windowsPerBatch, const ProgressFn &progress) {
  checkTokens(tokens, "sliding-window evaluation");
  if (context < 1 || windowsPerBatch < 1)
    throw Error("sliding-window evaluation: context and batch size must be >= 1");
  const int64_t n = tokens.size(0);
  if (n < 2)
    throw Error("sliding-window evaluation: need at least 2 tokens, got " + std::to_string(n));
  torch::NoGradGuard noGrad;
  const auto start = Clock::now();
  const auto device = model.device();
  const int64_t firstLength = std::min(context, n - 1);
  // Window s covers inputs [s, s + context) and scores token s + context;
  // window 0 scores all of tokens 1..firstLength.
  const int64_t laterWindows = n - 1 - firstLength;
  const int64_t batches = 1 + (laterWindows + windowsPerBatch - 1) / windowsPerBatch;
  Perplexity result;

  auto all = tokens.to(torch::kInt64);
  {
    auto inputs = all.narrow(0, 0, firstLength).unsqueeze(0).to(device);
    auto targets = all.narrow(0, 1, firstLength).to(device);
    auto [hidden, state] = model.hidden(inputs, {});
    auto nll = model.nll(hidden.reshape({firstLength, -1}), targets);
    result.nllSum += nll.to(torch::kFloat64).sum().item<double>();
    result.tokens += firstLength;
  }
  if (progress)
    progress(1, batches);
  for (int64_t begin = 1, batch = 1; begin <= laterWindows; begin += windowsPerBatch, ++batch) {
    const int64_t count = std::min(windowsPerBatch, laterWindows - begin + 1);
    // Rows [begin, begin + count) of the window matrix: inputs all[s : s + context].
    auto inputs = all.narrow(0, begin, count + context - 1).unfold(0, context, 1).to(device);
    auto targets = all.narrow(0, begin + context, count).to(device);
    auto [hidden, state] = model.hidden(inputs, {});
    auto last = hidden.select(1, context - 1);
    auto nll = model.nll(last, targets);
    result.nllSum += nll.to(torch::kFloat64).sum().item<double>();
    result.tokens += count;
    if (progress)
      progress(batch + 1, batches);
  }
  result.seconds = secondsSince(start);
  return result;
}

Perplexity evaluateCarryOver(LanguageModel &model, const torch::Tensor &tokens, int64_t batchSize,
                             int64_t segmentLength, const ProgressFn &progress) {
  return evaluateSegments(model, tokens, batchSize, segmentLength, /*carryState=*/true, 0, progress);
}

Perplexity evaluateSegments(LanguageModel &model, const torch::Tensor &tokens, int64_t batchSize,
                            int64_t segmentLength, bool carryState, int64_t maxSegments,
                            const ProgressFn &progress) {
  checkTokens(tokens, "segment evaluation");
  torch::NoGradGuard noGrad;
  const auto start = Clock::now();
  const auto device = model.device();
  OrderedBatches batches(tokens, batchSize, segmentLength);
  Perplexity result;
  LmState state;
  const int64_t segments =
      maxSegments > 0 ? std::min(maxSegments, batches.numSegments()) : batches.numSegments();
  for (int64_t i = 0; i < segments; ++i) {
    auto segment = batches.segment(i);
    auto [hidden, next] = model.hidden(segment.inputs.to(device), state);
    if (carryState)
      state = std::move(next);
    auto nll = model.nll(hidden.reshape({-1, hidden.size(-1)}), segment.targets.reshape({-1}).to(device));
    result.nllSum += nll.to(torch::kFloat64).sum().item<double>();
    result.tokens += segment.targets.numel();
    if (progress)
      progress(i + 1, segments);
  }
  result.seconds = secondsSince(start);
  return result;
}

} // namespace fwp::lm
