//===- Training.cpp - Reusable training-loop pieces ----------------------===//

#include "fwp/train/Training.h"

#include "fwp/train/DataFormat.h"
#include "fwp/train/Precision.h"
#include "fwp/runtime/CheckpointFile.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <iostream>
#include <limits>
#include <sstream>
#include <unistd.h>

namespace fwp::train {

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

AdamOptions adamOptionsFromConfig(const Config &config) {
  AdamOptions options;
  options.lr = config.getDouble("train.lr", options.lr);
  std::vector<double> betas =
      config.getDoubles("train.betas", std::vector<double>{options.beta1, options.beta2});
  if (betas.size() != 2)
    throw Error(config.source() + ": train.betas must hold two numbers");
  options.beta1 = betas[0];
  options.beta2 = betas[1];
  options.eps = config.getDouble("train.eps", options.eps);
  options.weightDecay = config.getDouble("train.weight_decay", options.weightDecay);
  if (!(options.lr > 0))
    throw Error(config.source() + ": train.lr must be positive");
  return options;
}

std::unique_ptr<torch::optim::Adam> makeAdam(const std::vector<torch::Tensor> &params,
                                             const AdamOptions &options) {
  return std::make_unique<torch::optim::Adam>(
      params, torch::optim::AdamOptions(options.lr)
                  .betas({options.beta1, options.beta2})
                  .eps(options.eps)
                  .weight_decay(options.weightDecay));
}

//===----------------------------------------------------------------------===//
// Checkpoints
//===----------------------------------------------------------------------===//

namespace {

/// Every parameter and buffer of `model` by its dotted name.
std::vector<std::pair<std::string, torch::Tensor>> namedTensors(torch::nn::Module &model) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto &item : model.named_parameters(true))
    tensors.emplace_back(item.key(), item.value());
  for (const auto &item : model.named_buffers(true))
    tensors.emplace_back(item.key(), item.value());
  return tensors;
}

std::string firstLine(const std::string &text) {
  return text.substr(0, text.find('\n'));
}

nlohmann::json metaToJson(const CheckpointMeta &meta) {
  nlohmann::json json;
  json["format"] = "fwp-checkpoint";
  json["version"] = 1;
  json["step"] = meta.step;
  json["best"] = meta.best ? nlohmann::json(*meta.best) : nlohmann::json(nullptr);
  json["best_step"] = meta.bestStep;
  json["config"] = meta.config;
  json["extra"] = meta.extra;
  return json;
}

CheckpointMeta metaFromArchive(torch::serialize::InputArchive &archive,
                               const std::string &file) {
  c10::IValue value;
  if (!archive.try_read("meta", value) || !value.isString())
    throw Error(file + ": not an fwp checkpoint (no meta record)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(value.toStringRef());
  } catch (const nlohmann::json::exception &e) {
    throw Error(file + ": corrupt checkpoint meta: " + e.what());
  }
  if (json.value("format", "") != "fwp-checkpoint" || json.value("version", 0) != 1)
    throw Error(file + ": not an fwp checkpoint of format version 1");
  CheckpointMeta meta;
  meta.step = json.at("step").get<int64_t>();
  if (!json.at("best").is_null())
    meta.best = json.at("best").get<double>();
  meta.bestStep = json.at("best_step").get<int64_t>();
  meta.config = json.at("config").get<std::string>();
  meta.extra = json.at("extra");
  return meta;
}

void loadArchive(torch::serialize::InputArchive &archive, const std::string &file,
                 std::optional<torch::Device> device) {
  // The envelope's digest is verified before the archive is parsed.
  const CheckpointFile checkpoint = readCheckpointFile(file);
  try {
    archive.load_from(checkpoint.payload.data(), checkpoint.payload.size(), device);
  } catch (const c10::Error &e) {
    throw Error(file + ": not a readable checkpoint: " + firstLine(e.what_without_backtrace()));
  }
}

std::vector<torch::Device> cudaDevices() {
  std::vector<torch::Device> devices;
  if (torch::cuda::is_available())
    for (int i = 0; i < static_cast<int>(torch::cuda::device_count()); ++i)
      devices.emplace_back(torch::kCUDA, static_cast<c10::DeviceIndex>(i));
  return devices;
}

} // namespace

void saveCheckpoint(const std::filesystem::path &path, torch::nn::Module &model,
                    torch::optim::Optimizer *optimizer, const CheckpointMeta &meta) {
  torch::serialize::OutputArchive root;
  c10::Dict<std::string, at::Tensor> tensors;
  for (const auto &[name, tensor] : namedTensors(model))
    tensors.insert(name, tensor.detach());
  root.write("model", c10::IValue(tensors));
  if (optimizer) {
    torch::serialize::OutputArchive optimizerArchive;
    optimizer->save(optimizerArchive);
    root.write("optimizer", optimizerArchive);
  }
  {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    root.write("rng_cpu", cpu.get_state());
  }
  for (const auto &device : cudaDevices()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    root.write("rng_cuda" + std::to_string(device.index()), gen.get_state());
  }
  c10::Dict<std::string, at::Tensor> extraTensors;
  for (const auto &[name, tensor] : meta.tensors)
    extraTensors.insert(name, tensor.detach().cpu());
  root.write("extra_tensors", c10::IValue(extraTensors));
  root.write("meta", c10::IValue(metaToJson(meta).dump()));

  std::string bytes;
  try {
    root.save_to([&](const void *data, size_t size) {
      bytes.append(static_cast<const char *>(data), size);
      return size;
    });
  } catch (const c10::Error &e) {
    throw Error(path.string() + ": cannot write the checkpoint: " +
                firstLine(e.what_without_backtrace()));
  }
  CheckpointHeader header;
  header.trainer = meta.trainer;
  header.codeVersion = fwpCodeVersion();
  header.config = meta.config;
  header.artifactDigest = meta.artifactDigest;
  header.step = meta.step;
  writeCheckpointFile(path.string(), header, bytes);
}

CheckpointMeta readCheckpointMeta(const std::filesystem::path &path) {
  torch::serialize::InputArchive archive;
  loadArchive(archive, path.string(), torch::Device(torch::kCPU));
  return metaFromArchive(archive, path.string());
}

CheckpointMeta loadCheckpoint(const std::filesystem::path &path,
                              torch::nn::Module &model,
                              torch::optim::Optimizer *optimizer,
                              const torch::Device &device, bool restoreRng) {
  const std::string file = path.string();
  // RNG states must stay CPU byte tensors; model and optimizer tensors go
  // straight to the training device.
  torch::serialize::InputArchive cpuArchive;
  loadArchive(cpuArchive, file, torch::Device(torch::kCPU));
  CheckpointMeta meta = metaFromArchive(cpuArchive, file);

  c10::IValue modelValue;
  if (!cpuArchive.try_read("model", modelValue) || !modelValue.isGenericDict())
    throw Error(file + ": the checkpoint holds no model tensors");
  c10::Dict<c10::IValue, c10::IValue> stored = modelValue.toGenericDict();
  {
    torch::NoGradGuard noGrad;
    size_t matched = 0;
    for (auto &[name, tensor] : namedTensors(model)) {
      auto it = stored.find(name);
      if (it == stored.end())
        throw Error(file + ": the checkpoint has no tensor '" + name +
                    "' (it was written for a different model)");
      const at::Tensor &saved = it->value().toTensor();
      if (saved.sizes() != tensor.sizes())
        throw Error(file + ": tensor '" + name + "' has shape " +
                    c10::str(saved.sizes()) + " in the checkpoint but " +
                    c10::str(tensor.sizes()) + " in the model");
      tensor.copy_(saved);
      ++matched;
    }
    if (matched != stored.size())
      throw Error(file + ": the checkpoint holds " + std::to_string(stored.size()) +
                  " tensors, the model " + std::to_string(matched) +
                  " (it was written for a different model)");
  }

  if (optimizer) {
    torch::serialize::InputArchive deviceArchive;
    if (!device.is_cpu())
      loadArchive(deviceArchive, file, device);
    torch::serialize::InputArchive &source = device.is_cpu() ? cpuArchive : deviceArchive;
    torch::serialize::InputArchive optimizerArchive;
    if (!source.try_read("optimizer", optimizerArchive))
      throw Error(file + ": the checkpoint holds no optimizer state (cannot resume)");
    try {
      optimizer->load(optimizerArchive);
    } catch (const c10::Error &e) {
      throw Error(file + ": the optimizer state does not fit: " +
                  firstLine(e.what_without_backtrace()));
    }
  }

  c10::IValue extraValue;
  if (cpuArchive.try_read("extra_tensors", extraValue) && extraValue.isGenericDict())
    for (const auto &entry : extraValue.toGenericDict())
      meta.tensors.emplace(entry.key().toStringRef(), entry.value().toTensor().to(device));

  if (restoreRng) {
    torch::Tensor state;
    if (!cpuArchive.try_read("rng_cpu", state))
      throw Error(file + ": the checkpoint holds no RNG state");
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_state(state);
    for (const auto &cuda : cudaDevices()) {
      torch::Tensor cudaState;
      if (cpuArchive.try_read("rng_cuda" + std::to_string(cuda.index()), cudaState)) {
        at::Generator gen = at::globalContext().defaultGenerator(cuda);
        std::lock_guard<std::mutex> cudaLock(gen.mutex());
        gen.set_state(cudaState);
      }
    }
  }
  return meta;
}

//===----------------------------------------------------------------------===//
// Metrics
//===----------------------------------------------------------------------===//

void truncateJsonLines(const std::filesystem::path &path, const std::string &key,
                       int64_t keepUpTo) {
  if (!std::filesystem::exists(path))
    return;
  std::vector<std::string> kept;
  for (const auto &line : readLines(path)) {
    try {
      nlohmann::json record = nlohmann::json::parse(line);
      if (record.value(key, int64_t{0}) <= keepUpTo)
        kept.push_back(line);
    } catch (const nlohmann::json::exception &) {
      // a line cut short by a crash: drop it
    }
  }
  writeFileAtomically(path, [&](std::ostream &out) {
    for (const auto &line : kept)
      out << line << '\n';
  });
}

MetricsLog::MetricsLog(const std::filesystem::path &path, int64_t keepUpToStep) {
  if (path.has_parent_path())
    std::filesystem::create_directories(path.parent_path());
  if (keepUpToStep >= 0)
    truncateJsonLines(path, "step", keepUpToStep);
  else
    std::filesystem::remove(path);
  out_.open(path, std::ios::app);
  if (!out_)
    throw Error(path.string() + ": cannot open the metrics log");
}

void MetricsLog::write(const nlohmann::json &record) {
  out_ << record.dump() << '\n';
  out_.flush();
}

//===----------------------------------------------------------------------===//
// The loop
//===----------------------------------------------------------------------===//

namespace {
volatile std::sig_atomic_t stopSignals = 0;

void onStopSignal(int signal) {
  if (stopSignals != 0)
    ::_exit(128 + signal); // the second signal: exit at once
  stopSignals = 1;
}
} // namespace

void installStopHandlers() {
  struct sigaction action {};
  action.sa_handler = onStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
}

bool stopRequested() { return stopSignals > 0; }
void requestStop() { stopSignals = 1; }

void prepareRunFolder(const std::filesystem::path &runDir, bool resuming, bool overwrite,
                      std::ostream &log, const std::vector<std::string> &runFiles) {
  if (resuming)
    return;
  std::vector<std::string> found;
  for (const std::string &file : runFiles)
    if (std::filesystem::exists(runDir / file))
      found.push_back(file);
  if (found.empty())
    return;
  std::string list;
  for (const std::string &file : found)
    list += (list.empty() ? "" : ", ") + file;
  if (!overwrite)
    throw Error("the run folder " + runDir.string() + " holds a run (" + list +
                "): continue it with --resume, start over with --overwrite, or choose "
                "another run folder");
  for (const std::string &file : found)
    std::filesystem::remove(runDir / file);
  log << "note: --overwrite: removed " << list << " from " << runDir.string() << "\n";
}

void checkResumeConfig(const std::filesystem::path &checkpoint, const std::string &config,
                       const std::string &artifactDigest, bool allowChange, std::ostream &log) {
  const CheckpointHeader stored = readCheckpointFile(checkpoint.string()).header;
  if (stored.config == config && stored.artifactDigest == artifactDigest)
    return;
  auto lines = [](const std::string &text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      out.push_back(line);
    return out;
  };
  std::vector<std::string> before = lines(stored.config), after = lines(config);
  std::string differences;
  for (const std::string &line : before)
    if (std::find(after.begin(), after.end(), line) == after.end())
      differences += "  - " + line + "\n";
  for (const std::string &line : after)
    if (std::find(before.begin(), before.end(), line) == before.end())
      differences += "  + " + line + "\n";
  if (stored.artifactDigest != artifactDigest)
    differences += "  - artifact sha256 " +
                   (stored.artifactDigest.empty() ? "(none)" : stored.artifactDigest) +
                   "\n  + artifact sha256 " +
                   (artifactDigest.empty() ? "(none)" : artifactDigest) + "\n";
  if (!allowChange)
    throw Error("--resume: the configuration or compiled layer differs from the one " +
                checkpoint.string() + " was trained with (- stored, + now):\n" + differences +
                "resume with the same ones, or pass --allow-config-change");
  log << "note: --allow-config-change: resuming " << checkpoint.string()
      << " with changes (- stored, + now):\n"
      << differences;
}

LoopOptions loopOptionsFromConfig(const Config &config) {
  LoopOptions options;
  options.steps = config.getInt("train.steps", options.steps);
  options.logEvery = config.getInt("train.log_every", options.logEvery);
  options.evalEvery = config.getInt("train.eval_every", options.evalEvery);
  options.checkpointEvery = config.getInt("train.checkpoint_every", options.checkpointEvery);
  options.clipNorm = config.getDouble("train.clip", options.clipNorm);
  options.onNonFinite = config.getString("train.on_nonfinite", options.onNonFinite);
  options.accumulate = config.getInt("train.accumulate", options.accumulate);
  if (options.accumulate < 1)
    throw Error(config.source() + ": train.accumulate must be at least 1");
  options.precision = config.getString("train.precision", options.precision);
  checkPrecision(options.precision, config.source());
  if (options.onNonFinite != "stop" && options.onNonFinite != "skip")
    throw Error(config.source() + ": train.on_nonfinite must be \"stop\" or \"skip\", not \"" +
                options.onNonFinite + "\"");
  std::string name = config.getString("name", "run");
  options.runDir = config.getString("train.run_dir", "runs/" + name);
  options.selectMetric = config.getString("train.select_metric", options.selectMetric);
  options.higherIsBetter =
      config.getBool("train.select_higher", options.selectMetric != "loss");
  if (options.steps < 1)
    throw Error(config.source() + ": train.steps must be positive");
  if (options.logEvery < 1)
    throw Error(config.source() + ": train.log_every must be positive");
  if (options.evalEvery < 0 || options.checkpointEvery < 0)
    throw Error(config.source() +
                ": train.eval_every and train.checkpoint_every must be >= 0");
  return options;
}

TrainingLoop::TrainingLoop(torch::nn::Module &model, torch::optim::Optimizer &optimizer,
                           LoopOptions options, std::string configText)
    : model_(model), optimizer_(optimizer), options_(std::move(options)),
      configText_(std::move(configText)) {}

void TrainingLoop::resumeFrom(const std::filesystem::path &checkpoint,
                              const torch::Device &device) {
  CheckpointMeta meta = loadCheckpoint(checkpoint, model_, &optimizer_, device, true);
  step_ = meta.step;
  best_ = meta.best;
  bestLoss_ = meta.extra.value("best_loss", std::numeric_limits<double>::infinity());
  bestStep_ = meta.bestStep;
  extra_ = meta.extra;
  extraTensors_ = meta.tensors;
}

void TrainingLoop::save(const std::filesystem::path &path) {
  if (onSave_)
    onSave_(); // on every rank: it may gather per-rank state
  if (!group_->isMain())
    return;
  CheckpointMeta meta;
  meta.step = step_;
  meta.best = best_;
  meta.bestStep = bestStep_;
  meta.config = configText_;
  meta.trainer = options_.trainer;
  meta.artifactDigest = options_.artifactDigest;
  meta.extra = extra_;
  meta.tensors = extraTensors_;
  if (std::isfinite(bestLoss_))
    meta.extra["best_loss"] = bestLoss_;
  saveCheckpoint(path, model_, &optimizer_, meta);
}

Metrics TrainingLoop::run(const StepFn &stepFn, const ValidateFn &validate) {
  if (group_->size() * options_.accumulate != 1)
    throw Error("TrainingLoop: a step function of the step alone cannot split its batch over " +
                std::to_string(group_->size()) + " processes x train.accumulate = " +
                std::to_string(options_.accumulate) + " (give a function of the StepPart)");
  return run([&](const StepPart &part) { return stepFn(part.step); }, validate);
}

Metrics TrainingLoop::run(const PartFn &partFn, const ValidateFn &validate) {
  const auto &o = options_;
  ProcessGroup &group = *group_;
  const bool main = group.isMain();
  if (o.accumulate < 1)
    throw Error("train.accumulate must be at least 1");
  // Only rank 0 writes the metrics log and shows progress.
  std::optional<MetricsLog> log;
  if (main)
    log.emplace(o.runDir / "metrics.jsonl", step_ > 0 ? step_ : -1);
  std::ostream discard(nullptr); // no buffer: other ranks' progress goes nowhere
  Progress progress(o.steps, step_, o.logEvery, main ? std::cerr : discard,
                    main ? o.interactive : std::optional<bool>(false));
  Metrics window;
  int64_t windowSteps = 0;
  Metrics lastValidation;
  auto wallStart = std::chrono::steady_clock::now();
  auto trainable = model_.parameters();
  const torch::Device device = trainable.empty() ? torch::Device(torch::kCPU)
                                                 : trainable.front().device();
  if (group.distributed()) {
    // Every rank starts from rank 0's parameters and buffers.
    torch::NoGradGuard noGrad;
    std::vector<torch::Tensor> tensors;
    for (const torch::Tensor &param : trainable)
      tensors.push_back(param.detach());
    for (const torch::Tensor &buffer : model_.buffers())
      tensors.push_back(buffer);
    group.broadcast(tensors);
  }
  GradientReducer reducer(trainable, group);
  const int64_t parts = group.size() * o.accumulate;
  // How a step's batch is split; a resumed run says when this changes.
  const nlohmann::json layout = {{"processes", group.size()}, {"accumulate", o.accumulate}};
  if (extra_.contains("parallel") && extra_["parallel"] != layout) {
    auto describe = [](const nlohmann::json &l) {
      return std::to_string(l.value("processes", 1)) + " process(es) x " +
             std::to_string(l.value("accumulate", 1)) + " micro-batch(es)";
    };
    progress.note("note: the checkpoint was trained with " + describe(extra_["parallel"]) +
                  " per step, this run uses " + describe(layout) +
                  ": from here on a step's global batch (and so the data order) differs");
  }
  extra_["parallel"] = layout;
  bool stopAgreed = false; // distributed: some rank was asked to stop

  model_.train();
  interrupted_ = false;
  while (step_ < o.steps) {
    if (group.distributed() ? stopAgreed : stopRequested()) {
      // A signal arrived: the last step is complete; keep it and stop.
      progress.finish();
      save(o.runDir / "last.pt");
      group.barrier();
      interrupted_ = true;
      if (main)
        std::fprintf(stderr, "stopped at step %lld: wrote %s (continue with --resume)\n",
                     static_cast<long long>(step_), (o.runDir / "last.pt").string().c_str());
      return lastValidation;
    }
    optimizer_.zero_grad();
    // This rank's parts: forward under autocast, backward of the summed
    // (weight x mean) loss; normalised by the total weight below.
    double lossSum = 0, weightSum = 0;
    Metrics partMetrics;
    for (int64_t m = 0; m < o.accumulate; ++m) {
      StepPart part{step_, group.rank() * o.accumulate + m, parts};
      StepResult result;
      {
        AutocastGuard autocast(o.precision, device);
        result = partFn(part);
      }
      if (!result.loss.defined() || result.loss.numel() != 1)
        throw Error("training step " + std::to_string(step_) + " returned no scalar loss");
      if (!(result.weight > 0))
        throw Error("training step " + std::to_string(step_) + " returned a weight <= 0");
      (result.weight == 1.0 ? result.loss : result.loss * result.weight).backward();
      lossSum += result.loss.item<double>() * result.weight;
      weightSum += result.weight;
      for (const auto &[name, value] : result.metrics)
        partMetrics[name] += value;
    }
    // One small collective: loss, weight, stop requests and metrics.
    std::vector<double> values{lossSum, weightSum, stopRequested() ? 1.0 : 0.0};
    for (const auto &[name, value] : partMetrics)
      values.push_back(value);
    values = group.sum(values);
    const double totalWeight = values[1];
    stopAgreed = values[2] > 0;
    double loss = values[0] / totalWeight;
    Metrics stepMetrics;
    size_t next = 3;
    for (const auto &[name, value] : partMetrics)
      stepMetrics[name] = values[next++] / static_cast<double>(parts);
    reducer.reduce(totalWeight);
    // Non-finite values are caught before they reach the parameters.
    bool finite = std::isfinite(loss);
    if (finite) {
      std::vector<torch::Tensor> norms;
      for (const torch::Tensor &param : trainable)
        if (param.grad().defined())
          norms.push_back(param.grad().detach().abs().sum().to(torch::kDouble).cpu());
      finite = norms.empty() || std::isfinite(torch::stack(norms).sum().item<double>());
    }
    if (!finite) {
      std::string what = std::string(std::isfinite(loss) ? "a gradient" : "the loss") +
                         " is not finite at step " + std::to_string(step_ + 1);
      if (o.onNonFinite == "skip") {
        optimizer_.zero_grad();
        ++step_;
        ++skipped_;
        progress.note(what + ": its update was skipped (train.on_nonfinite = \"skip\")");
        if (log)
          log->write({{"step", step_}, {"split", "train"}, {"skipped", "nonfinite"}});
        if ((o.checkpointEvery > 0 && step_ % o.checkpointEvery == 0) || step_ == o.steps)
          save(o.runDir / "last.pt");
        continue;
      }
      progress.finish();
      save(o.runDir / "last.pt");
      throw Error(what + "; the last good state (step " + std::to_string(step_) +
                  ") is in " + (o.runDir / "last.pt").string() +
                  ". Lower train.lr, set train.clip, or train.on_nonfinite = \"skip\"");
    }
    if (o.clipNorm > 0)
      torch::nn::utils::clip_grad_norm_(trainable, o.clipNorm);
    optimizer_.step();
    ++step_;
    stepMetrics["loss"] = loss;
    for (const auto &[name, value] : stepMetrics)
      window[name] += value;
    ++windowSteps;
    progress.update(step_, stepMetrics);

    if (step_ % o.logEvery == 0 || step_ == o.steps) {
      nlohmann::json record = {{"step", step_}, {"split", "train"}};
      for (const auto &[name, value] : window)
        record[name] = value / windowSteps;
      record["steps_per_s"] = progress.stepsPerSecond();
      record["elapsed_s"] = std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - wallStart)
                                .count();
      if (log)
        log->write(record);
      window.clear();
      windowSteps = 0;
    }

    const bool last = step_ == o.steps;
    if (validate && o.evalEvery > 0 && (step_ % o.evalEvery == 0 || last)) {
      progress.pause();
      model_.eval();
      {
        torch::NoGradGuard noGrad;
        lastValidation = validate();
      }
      model_.train();
      auto it = lastValidation.find(o.selectMetric);
      if (it == lastValidation.end())
        throw Error("validation gives no metric '" + o.selectMetric +
                    "' (train.select_metric)");
      // Ties on the selection metric (common early on: sequence accuracy 0)
      // go to the lower validation loss.
      auto loss = lastValidation.find("loss");
      bool better = !best_ || (o.higherIsBetter ? it->second > *best_
                                                 : it->second < *best_);
      if (best_ && it->second == *best_ && loss != lastValidation.end() &&
          o.selectMetric != "loss")
        better = loss->second < bestLoss_;
      if (better) {
        best_ = it->second;
        bestStep_ = step_;
        if (loss != lastValidation.end())
          bestLoss_ = loss->second;
      }
      nlohmann::json record = {{"step", step_}, {"split", "valid"}, {"best", better}};
      for (const auto &[name, value] : lastValidation)
        record[name] = value;
      if (log)
        log->write(record);
      std::ostringstream line;
      line << "valid @ step " << step_ << ":";
      for (const auto &[name, value] : lastValidation)
        line << "  " << name << " " << value;
      if (better)
        line << "  (best so far, saved best.pt)";
      progress.note(line.str());
      if (better)
        save(o.runDir / "best.pt");
      progress.resume();
    }
    if ((o.checkpointEvery > 0 && step_ % o.checkpointEvery == 0) || last) {
      progress.pause();
      save(o.runDir / "last.pt");
      progress.resume();
    }
  }
  progress.finish();
  group.barrier(); // rank 0's checkpoints are written before anyone reads them
  return lastValidation;
}

} // namespace fwp::train
