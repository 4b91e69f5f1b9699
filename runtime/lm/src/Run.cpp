//===- Run.cpp - Language-model runs: train and evaluate -------------------===//

#include "fwp/lm/Run.h"

#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/Progress.h"

#include "fwp/lm/Corpus.h"
#include "fwp/lm/Evaluate.h"
#include "fwp/lm/WordModel.h"
#include "fwp/train/Config.h"
#include "fwp/train/Model.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <ostream>
#include <sstream>
#include <tuple>

#include <unistd.h>

namespace fwp::lm {

using fwp::train::Config;
using fwp::train::Metrics;

double learningRate(const std::string &schedule, double lr, double minLr, int64_t warmup, int64_t total,
                    int64_t step) {
  const double s = static_cast<double>(step + 1);
  if (warmup > 0 && step + 1 < warmup)
    return lr * s / static_cast<double>(warmup);
  if (schedule == "constant")
    return lr;
  if (schedule == "cosine") {
    const double progress = std::min(1.0, s / static_cast<double>(std::max<int64_t>(total, 1)));
    return minLr + (lr - minLr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  throw Error("train.schedule must be \"cosine\" or \"constant\", got \"" + schedule + "\"");
}

namespace {

CorpusOptions corpusOptionsFromConfig(const Config &config) {
  const std::string task = config.getString("data.task", "wikitext");
  if (task != "wikitext")
    throw Error(config.source() + ": data.task = \"" + task +
                "\": fwp-lm trains word-level language models (data.task = \"wikitext\"); "
                "use fwp-train for the algorithmic tasks");
  CorpusOptions options;
  options.dataDir = config.getString("data.dir");
  options.cacheDir = config.getString("data.cache_dir", "");
  options.skipEmptyLines = config.getBool("data.skip_empty_lines", false);
  options.unknownSymbol = config.getString("data.unknown", "<unk>");
  options.verbose = true;
  return options;
}

struct TrainSettings {
  int64_t batch = 96;
  int64_t context = 256;
  bool carryOver = false;
  int64_t warmup = 2000;
  std::string schedule = "cosine";
  double minLr = 0.0;
  int64_t evalBatch = 16;
  int64_t evalSegments = 0;
};

TrainSettings trainSettingsFromConfig(const Config &config) {
  TrainSettings s;
  s.batch = config.getInt("train.batch", s.batch);
  s.context = config.getInt("train.context", s.context);
  s.carryOver = config.getBool("train.carry_over", s.carryOver);
  s.warmup = config.getInt("train.warmup", s.warmup);
  s.schedule = config.getString("train.schedule", s.schedule);
  s.minLr = config.getDouble("train.min_lr", s.minLr);
  s.evalBatch = config.getInt("train.eval_batch", s.evalBatch);
  s.evalSegments = config.getInt("train.eval_segments", s.evalSegments);
  if (s.batch < 1 || s.context < 1 || s.evalBatch < 1)
    throw Error(config.source() + ": train.batch, train.context and train.eval_batch must be >= 1");
  if (s.warmup < 0 || s.evalSegments < 0)
    throw Error(config.source() + ": train.warmup and train.eval_segments must be >= 0");
  learningRate(s.schedule, 1, 0, 0, 1, 0); // validates the name
  return s;
}

struct EvalSettings {
  std::vector<std::string> modes = {"sliding"};
  int64_t context = 0;    ///< sliding window / segment length; 0: train.context
  int64_t windows = 32;   ///< sliding windows per batch
  int64_t carryBatch = 1; ///< rows for carry-over
  int64_t segmentBatch = 16;
  int64_t maxTokens = 0; ///< 0: the whole split
};

EvalSettings evalSettingsFromConfig(const Config &config, int64_t trainContext) {
  EvalSettings e;
  e.modes = config.getStrings("eval.modes", e.modes);
  e.context = config.getInt("eval.context", trainContext);
  e.windows = config.getInt("eval.windows", e.windows);
  e.carryBatch = config.getInt("eval.carry_batch", e.carryBatch);
  e.segmentBatch = config.getInt("eval.segment_batch", e.segmentBatch);
  e.maxTokens = config.getInt("eval.max_tokens", e.maxTokens);
  for (const auto &mode : e.modes)
    if (mode != "sliding" && mode != "carry" && mode != "segments")
      throw Error(config.source() + ": eval.modes: unknown mode \"" + mode +
                  "\" (expected sliding, carry or segments)");
  if (e.context < 1 || e.windows < 1 || e.carryBatch < 1 || e.segmentBatch < 1 || e.maxTokens < 0)
    throw Error(config.source() + ": eval.context, windows, carry_batch and segment_batch must be >= 1");
  return e;
}

void applyRequest(Config &config, const std::vector<std::string> &overrides,
                  const std::optional<std::string> &device) {
  for (const auto &assignment : overrides)
    config.set(assignment);
  if (device)
    config.setValue("train.device", nlohmann::json(*device).dump());
}

/// Progress of a long evaluation (fwp::Progress): a bar redrawn in place on
/// a terminal, else one line per tenth of the batches.
ProgressFn evaluationProgress(const std::string &what, const std::optional<bool> &interactive) {
  fwp::ProgressOptions options;
  options.label = "  " + what;
  options.unit = "batches";
  options.interactive = interactive;
  auto progress = std::make_shared<fwp::Progress>(options, std::cerr);
  return [progress](int64_t done, int64_t total) {
    progress->setTotal(total);
    progress->setLineEvery(std::max<int64_t>(1, total / 10));
    progress->update(done);
    if (done >= total)
      progress->finish();
  };
}

Metrics runEvaluations(WordModelImpl &model, const torch::Tensor &allTokens, const EvalSettings &settings,
                       std::ostream &log, const std::string &splitName, const std::optional<bool> &interactive) {
  Metrics metrics;
  torch::Tensor tokens = allTokens;
  if (settings.maxTokens > 0 && settings.maxTokens < tokens.size(0))
    tokens = tokens.narrow(0, 0, settings.maxTokens);
  model.eval();
  for (const auto &mode : settings.modes) {
    Perplexity p;
    const ProgressFn progress = evaluationProgress(splitName + " " + mode, interactive);
    std::string how;
    if (mode == "sliding") {
      p = evaluateSlidingWindow(model, tokens, settings.context, settings.windows, progress);
      how = "sliding window of " + std::to_string(settings.context);
    } else if (mode == "carry") {
      p = evaluateCarryOver(model, tokens, settings.carryBatch, settings.context, progress);
      how = "state carried over " + std::to_string(settings.carryBatch) + " row(s), segments of " +
            std::to_string(settings.context);
    } else {
      p = evaluateSegments(model, tokens, settings.segmentBatch, settings.context, false, 0,
                           progress);
      how = "independent segments of " + std::to_string(settings.context);
    }
    metrics[mode + "_ppl"] = p.perplexity();
    metrics[mode + "_loss"] = p.loss();
    metrics[mode + "_tokens"] = static_cast<double>(p.tokens);
    metrics[mode + "_seconds"] = p.seconds;
    log << splitName << " " << mode << ": ppl " << std::fixed << std::setprecision(2) << p.perplexity()
        << " (loss " << std::setprecision(4) << p.loss() << ", " << p.tokens << " tokens, " << how << ", "
        << std::setprecision(1) << p.seconds << " s)" << std::defaultfloat << std::setprecision(6) << "\n";
  }
  return metrics;
}

// The carried state in a checkpoint's extra tensors: "lm_state.step" (the
// step that produced it), "lm_state.layers", "lm_state.<layer>.<name>".
void packState(const LmState &state, int64_t step, TensorMap &out) {
  out.clear();
  out["lm_state.step"] = torch::tensor({step}, torch::kInt64);
  out["lm_state.layers"] = torch::tensor({static_cast<int64_t>(state.size())}, torch::kInt64);
  for (size_t layer = 0; layer < state.size(); ++layer)
    for (const auto &[name, tensor] : state[layer])
      out["lm_state." + std::to_string(layer) + "." + name] = tensor;
}

std::pair<LmState, int64_t> unpackState(const TensorMap &in) {
  auto step = in.find("lm_state.step");
  auto layers = in.find("lm_state.layers");
  if (step == in.end() || layers == in.end())
    return {LmState{}, -1};
  LmState state(static_cast<size_t>(layers->second.item<int64_t>()));
  for (const auto &[key, tensor] : in) {
    if (key.rfind("lm_state.", 0) != 0 || key == "lm_state.step" || key == "lm_state.layers")
      continue;
    const std::string rest = key.substr(9);
    const size_t dot = rest.find('.');
    const size_t layer = dot == std::string::npos ? state.size() : std::stoul(rest.substr(0, dot));
    if (layer >= state.size())
      throw Error("checkpoint tensor " + key + " names no layer of the carried state");
    state[layer][rest.substr(dot + 1)] = tensor;
  }
  return {std::move(state), step->second.item<int64_t>()};
}

/// The batch (row) dimension of a carried state tensor: the LSTM keeps
/// [layers, B, H] (LibTorch's layout), every other stack [B, ...].
int64_t stateBatchDim(const std::string &stackKind) { return stackKind == "lstm" ? 1 : 0; }

/// The parts' states side by side (parts in order): one state of all rows.
LmState concatStates(const std::vector<LmState> &parts, int64_t dim) {
  if (parts.empty() || parts.front().empty())
    return {};
  LmState out(parts.front().size());
  for (size_t layer = 0; layer < out.size(); ++layer)
    for (const auto &[name, tensor] : parts.front()[layer]) {
      std::vector<torch::Tensor> pieces;
      for (const LmState &part : parts)
        pieces.push_back(part.at(layer).at(name));
      out[layer][name] = torch::cat(pieces, dim);
    }
  return out;
}

/// Rows [first, first + rows) of a state.
LmState sliceState(const LmState &state, int64_t dim, int64_t first, int64_t rows) {
  LmState out(state.size());
  for (size_t layer = 0; layer < state.size(); ++layer)
    for (const auto &[name, tensor] : state[layer])
      out[layer][name] = tensor.narrow(dim, first, rows).contiguous();
  return out;
}

/// Rows of a state (0 when empty).
int64_t stateRows(const LmState &state, int64_t dim) {
  for (const auto &layer : state)
    for (const auto &[name, tensor] : layer)
      return tensor.size(dim);
  return 0;
}

void writeJson(const std::filesystem::path &path, const nlohmann::json &json) {
  fwp::writeFileAtomically(path.string(), json.dump(2) + "\n");
}

} // namespace

Metrics trainLanguageModel(const LmTrainRequest &request, std::ostream &log) {
  Config config = Config::fromFile(request.configPath);
  applyRequest(config, request.overrides, request.device);
  if (request.reference)
    config.set("model.reference=true");
  if (!config.has("train.select_metric"))
    config.set("train.select_metric=ppl");
  if (!config.has("train.select_higher"))
    config.set("train.select_higher=false");

  const uint64_t seed = static_cast<uint64_t>(config.getInt("train.seed", 1));
  torch::manual_seed(seed);
  // One process per device (docs/training.md); rank 0 builds a missing
  // corpus cache alone, the others read it afterwards.
  fwp::train::DistributedEnv distributed = fwp::train::distributedEnvFromEnvironment();
  distributed.timeout = fwp::train::distributedTimeoutFromConfig(config);
  torch::Device device = fwp::train::parseDevice(config.getString("train.device", "cpu"));
  if (device.is_cuda() && distributed.worldSize > 1) {
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(distributed.localRank));
    config.setValue("train.device", nlohmann::json(device.str()).dump());
  }
  fwp::train::ProcessGroup group(distributed, device);
  std::ostream discard(nullptr);
  std::ostream &out = group.isMain() ? log : discard;
  if (!group.isMain())
    group.barrier();
  CorpusOptions corpusOptions = corpusOptionsFromConfig(config);
  corpusOptions.verbose = group.isMain();
  Corpus corpus = Corpus::open(corpusOptions);
  if (group.isMain())
    group.barrier();
  const int64_t vocabSize = corpus.vocab().size();

  WordModelOptions modelOptions = wordModelOptionsFromConfig(config, vocabSize);
  WordModel model(modelOptions, device);
  auto optimizer = fwp::train::makeAdam(model->parameters(), fwp::train::adamOptionsFromConfig(config));
  const double baseLr = fwp::train::adamOptionsFromConfig(config).lr;
  fwp::train::LoopOptions loopOptions = fwp::train::loopOptionsFromConfig(config);
  loopOptions.interactive = request.interactive;
  loopOptions.trainer = "fwp-lm";
  const TrainSettings settings = trainSettingsFromConfig(config);
  const EvalSettings evalSettings = evalSettingsFromConfig(config, settings.context);
  config.checkUnused();
  // A step's rows: `parts` shares of train.batch rows (processes x
  // micro-batches); this rank's parts are rank*k ... rank*k + k - 1.
  const int64_t accumulate = loopOptions.accumulate;
  const int64_t parts = group.size() * accumulate;
  const int64_t stateDim = stateBatchDim(modelOptions.stack.kind);

  const auto &effective = model->io().boundaries();
  out << "corpus " << corpus.cachePath() << ": vocabulary " << vocabSize << ", train "
      << corpus.numTokens(Split::Train) << " tokens; adaptive softmax clusters " << effective.size() - 1 << " (";
  for (size_t i = 1; i + 1 < effective.size(); ++i)
    out << (i > 1 ? ", " : "") << effective[i];
  out << (effective.size() > 2 ? "" : "no cutoff") << ")\n";
  out << "model " << modelOptions.stack.kind
      << (modelOptions.stack.kind == "fwp" ? " " + modelOptions.stack.layer.name : std::string()) << ": "
      << fwp::train::countParameters(*model) << " parameters on " << device << "\n";
  if (parts > 1)
    out << "batch: " << settings.batch << " rows x " << group.size() << " processes ("
        << group.backendName() << ") x " << accumulate << " micro-batches = " << settings.batch * parts
        << " rows\n";

  if (modelOptions.stack.kind == "fwp" && !modelOptions.stack.layer.artifact.empty())
    loopOptions.artifactDigest = fwp::artifactDigest(modelOptions.stack.layer.artifact);
  fwp::train::TrainingLoop loop(*model, *optimizer, loopOptions, config.toToml());
  loop.setProcessGroup(group);
  loop.extra()["vocab_size"] = vocabSize;
  loop.extra()["train_hash"] = std::to_string(corpus.fileInfo(Split::Train).hash);
  const bool resuming = request.resume || !request.resumeFrom.empty();
  if (group.isMain())
    fwp::train::prepareRunFolder(loopOptions.runDir, resuming, request.overwrite, out);
  group.barrier();
  if (resuming) {
    auto from = request.resumeFrom.empty() ? loopOptions.runDir / "last.pt" : std::filesystem::path(request.resumeFrom);
    fwp::train::checkResumeConfig(from, config.toToml(), loopOptions.artifactDigest, request.allowConfigChange,
                                  out);
    loop.resumeFrom(from, device);
    out << "resumed from " << from.string() << " at step " << loop.step() << "\n";
  }

  OrderedBatches batches(corpus.tokens(Split::Train), settings.batch * parts, settings.context);
  const torch::Tensor validTokens = corpus.tokens(Split::Valid);
  // The carried state of this rank's parts (rows of the global batch).
  std::vector<LmState> states(static_cast<size_t>(accumulate));
  int64_t stateStep = -1; // the step whose final state `states` hold
  if (settings.carryOver) {
    auto [stored, step] = unpackState(loop.extraTensors());
    const int64_t rows = stateRows(stored, stateDim);
    if (rows == settings.batch * parts) {
      for (int64_t m = 0; m < accumulate; ++m)
        states[m] = sliceState(stored, stateDim, (group.rank() * accumulate + m) * settings.batch,
                               settings.batch);
      stateStep = step;
    } else if (rows > 0) {
      out << "note: the checkpoint carries the state of " << rows << " rows, this run has "
          << settings.batch * parts << " (train.batch x processes x train.accumulate): the rows are "
          << "laid out anew and start from a zero state\n";
    }
  }
  // Checkpoints hold the state of all rows, whatever the process count.
  loop.onSave([&] {
    if (!settings.carryOver || states.front().empty())
      return;
    LmState local = concatStates(states, stateDim);
    LmState all(local.size());
    for (size_t layer = 0; layer < local.size(); ++layer)
      for (const auto &[name, tensor] : local[layer])
        all[layer][name] = torch::cat(group.allGather(tensor.contiguous()), stateDim).cpu();
    packState(all, stateStep, loop.extraTensors());
  });
  auto step = [&](const fwp::train::StepPart &part) -> fwp::train::StepResult {
    const int64_t s = part.step;
    const double lr = learningRate(settings.schedule, baseLr, settings.minLr, settings.warmup, loopOptions.steps, s);
    for (auto &paramGroup : optimizer->param_groups())
      static_cast<torch::optim::AdamOptions &>(paramGroup.options()).lr(lr);
    const int64_t index = s % batches.numSegments();
    LmState &state = states.at(static_cast<size_t>(part.index % accumulate));
    // The state goes on only from the segment just before (not across an
    // epoch boundary, nor into a resumed run).
    if (!settings.carryOver || index == 0 || stateStep != s - 1)
      state.clear();
    auto segment = batches.segment(index);
    auto inputs = segment.inputs.narrow(0, part.index * settings.batch, settings.batch);
    auto targets = segment.targets.narrow(0, part.index * settings.batch, settings.batch);
    auto [hidden, final] = model->hidden(inputs.to(device), state);
    auto loss = model->nll(hidden.reshape({-1, hidden.size(-1)}), targets.reshape({-1}).to(device)).mean();
    if (settings.carryOver) {
      state = detachState(final);
      if (part.index % accumulate == accumulate - 1)
        stateStep = s;
    }
    return {loss, {{"lr", lr}}, static_cast<double>(targets.numel())};
  };
  auto validate = [&]() -> Metrics {
    // Sharded by rows: rank r scores rows [r B / N, (r + 1) B / N) of the
    // same row layout as one process, then the sums are added up.
    const int64_t rowLength = validTokens.size(0) / settings.evalBatch;
    const int64_t first = group.rank() * settings.evalBatch / group.size();
    const int64_t end = (group.rank() + 1) * settings.evalBatch / group.size();
    Perplexity p;
    if (end > first)
      p = evaluateSegments(*model, validTokens.narrow(0, first * rowLength, (end - first) * rowLength), end - first,
                           settings.context, settings.carryOver, settings.evalSegments);
    std::vector<double> sums = group.sum({p.nllSum, static_cast<double>(p.tokens)});
    p.nllSum = sums[0];
    p.tokens = static_cast<int64_t>(sums[1]);
    return {{"ppl", p.perplexity()}, {"loss", p.loss()}};
  };
  loop.run(step, validate);
  if (loop.interrupted() || !group.isMain())
    return {}; // rank 0 alone scores the test split

  // Score the best checkpoint on the test split.
  auto best = loopOptions.runDir / "best.pt";
  if (std::filesystem::exists(best)) {
    fwp::train::loadCheckpoint(best, *model, nullptr, device, false);
    log << "test of " << best.string() << " (step " << fwp::train::readCheckpointMeta(best).step << "):\n";
  } else {
    log << "no best.pt (train.eval_every = 0): testing the final model\n";
  }
  Metrics metrics = runEvaluations(*model, corpus.tokens(Split::Test), evalSettings, log, "test", request.interactive);
  nlohmann::json json(metrics);
  json["checkpoint"] = best.string();
  writeJson(loopOptions.runDir / "test.json", json);
  return metrics;
}

Metrics evaluateLanguageModel(const LmEvalRequest &request, std::ostream &log) {
  auto meta = fwp::train::readCheckpointMeta(request.checkpoint);
  Config config = Config::fromString(meta.config, request.checkpoint);
  applyRequest(config, request.overrides, request.device);
  const torch::Device device = fwp::train::parseDevice(config.getString("train.device", "cpu"));
  Corpus corpus = Corpus::open(corpusOptionsFromConfig(config));
  const int64_t vocabSize = corpus.vocab().size();
  if (meta.extra.contains("vocab_size") && meta.extra["vocab_size"].get<int64_t>() != vocabSize)
    throw Error(request.checkpoint + " was trained with a vocabulary of " +
                std::to_string(meta.extra["vocab_size"].get<int64_t>()) + " words, " + corpus.cachePath() +
                " has " + std::to_string(vocabSize) + " (data.dir changed?)");
  WordModel model(wordModelOptionsFromConfig(config, vocabSize), device);
  fwp::train::loadCheckpoint(request.checkpoint, *model, nullptr, device, false);
  const TrainSettings settings = trainSettingsFromConfig(config);
  EvalSettings evalSettings = evalSettingsFromConfig(config, settings.context);
  if (!request.modes.empty()) {
    evalSettings.modes = request.modes;
    for (const auto &mode : evalSettings.modes)
      if (mode != "sliding" && mode != "carry" && mode != "segments")
        throw Error("--mode " + mode + ": expected sliding, carry or segments");
  }
  if (request.maxTokens)
    evalSettings.maxTokens = *request.maxTokens;
  log << request.checkpoint << " (step " << meta.step << "), " << request.split << " split of " << corpus.cachePath()
      << "\n";
  Metrics metrics = runEvaluations(*model, corpus.tokens(parseSplit(request.split)), evalSettings, log,
                                   request.split, std::nullopt);
  if (!request.jsonPath.empty()) {
    nlohmann::json json(metrics);
    json["checkpoint"] = request.checkpoint;
    json["split"] = request.split;
    json["step"] = meta.step;
    writeJson(request.jsonPath, json);
  }
  return metrics;
}

} // namespace fwp::lm
