//===- Experiment.cpp - Algorithmic-task runs: train and evaluate --------===//

#include "fwp/train/Experiment.h"

#include "fwp/runtime/ArtifactContainer.h"

#include <algorithm>
#include <iomanip>
#include <numeric>
#include <ostream>

namespace fwp::train {

Batch makeBatch(const std::vector<SequenceExample> &data,
                const std::vector<int64_t> &indices, const torch::Device &device) {
  size_t length = 0;
  for (int64_t i : indices)
    length = std::max(length, data.at(i).input.size());
  const int64_t B = static_cast<int64_t>(indices.size());
  const int64_t T = static_cast<int64_t>(length);
  torch::Tensor input = torch::zeros({B, T}, torch::kLong);
  torch::Tensor target = torch::full({B, T}, kIgnore, torch::kLong);
  auto in = input.accessor<int64_t, 2>();
  auto out = target.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const SequenceExample &example = data[indices[b]];
    for (size_t t = 0; t < example.input.size(); ++t) {
      in[b][t] = example.input[t];
      out[b][t] = example.target[t] < 0 ? kIgnore : example.target[t];
    }
  }
  return {input.to(device), target.to(device)};
}

torch::Tensor sequenceLoss(const torch::Tensor &logits, const Batch &batch) {
  return torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), batch.target.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnore));
}

void SequenceMetrics::add(const torch::Tensor &logits, const Batch &batch) {
  torch::NoGradGuard noGrad;
  torch::Tensor scored = batch.target != kIgnore;
  torch::Tensor predicted = logits.argmax(-1);
  torch::Tensor right = predicted == batch.target;
  lossSum_ += torch::nn::functional::cross_entropy(
                  logits.reshape({-1, logits.size(-1)}), batch.target.reshape({-1}),
                  torch::nn::functional::CrossEntropyFuncOptions()
                      .ignore_index(kIgnore)
                      .reduction(torch::kSum))
                  .item<double>();
  scored_ += scored.sum().item<int64_t>();
  sequences_ += batch.target.size(0);
  sequencesRight_ += (right | ~scored).all(1).sum().item<int64_t>();
  if (blank_ >= 0) {
    torch::Tensor key = scored & (batch.target != blank_);
    keyTargets_ += key.sum().item<int64_t>();
    keyRight_ += (key & right).sum().item<int64_t>();
  }
}

void SequenceMetrics::reduce(ProcessGroup &group) {
  std::vector<double> sums = group.sum(
      {lossSum_, static_cast<double>(scored_), static_cast<double>(sequences_),
       static_cast<double>(sequencesRight_), static_cast<double>(keyTargets_),
       static_cast<double>(keyRight_)});
  lossSum_ = sums[0];
  scored_ = static_cast<int64_t>(sums[1]);
  sequences_ = static_cast<int64_t>(sums[2]);
  sequencesRight_ = static_cast<int64_t>(sums[3]);
  keyTargets_ = static_cast<int64_t>(sums[4]);
  keyRight_ = static_cast<int64_t>(sums[5]);
}

Metrics SequenceMetrics::result() const {
  Metrics metrics;
  metrics["loss"] = scored_ ? lossSum_ / static_cast<double>(scored_) : 0.0;
  metrics["acc"] =
      sequences_ ? static_cast<double>(sequencesRight_) / static_cast<double>(sequences_) : 0.0;
  if (blank_ >= 0)
    metrics["print_acc"] =
        keyTargets_ ? static_cast<double>(keyRight_) / static_cast<double>(keyTargets_) : 0.0;
  return metrics;
}

Metrics evaluateModel(TokenModelImpl &model, const std::vector<SequenceExample> &data,
                      int64_t batchSize, const torch::Device &device,
                      int32_t blankClass, ProcessGroup *group) {
  torch::NoGradGuard noGrad;
  std::vector<int64_t> order(data.size());
  std::iota(order.begin(), order.end(), 0);
  // Similar lengths together: less padding, and the result does not depend on
  // how the split is ordered on disk.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return data[a].input.size() < data[b].input.size();
  });
  SequenceMetrics metrics(blankClass);
  const size_t rank = group ? group->rank() : 0, ranks = group ? group->size() : 1;
  size_t index = 0;
  for (size_t start = 0; start < order.size(); start += batchSize, ++index) {
    if (index % ranks != rank)
      continue;
    std::vector<int64_t> indices(
        order.begin() + start,
        order.begin() + std::min(order.size(), start + static_cast<size_t>(batchSize)));
    Batch batch = makeBatch(data, indices, device);
    metrics.add(model.forward(batch.input), batch);
  }
  if (group)
    metrics.reduce(*group);
  return metrics.result();
}

EpochSampler::EpochSampler(int64_t size, int64_t batchSize, uint64_t seed)
    : size_(size), batchSize_(std::min(batchSize, size)), seed_(seed) {
  if (size < 1 || batchSize < 1)
    throw Error("cannot sample batches of " + std::to_string(batchSize) + " from " +
                std::to_string(size) + " examples");
}

std::vector<int64_t> EpochSampler::indices(int64_t step) {
  const int64_t perEpoch = size_ / batchSize_; // the last partial batch is dropped
  const int64_t epoch = step / perEpoch;
  const int64_t k = step % perEpoch;
  if (epoch != epoch_) {
    order_.resize(size_);
    std::iota(order_.begin(), order_.end(), 0);
    Rng rng(mixSeed(seed_, 1000003 + static_cast<uint64_t>(epoch)));
    for (int64_t i = size_ - 1; i > 0; --i)
      std::swap(order_[i], order_[rng.uniformInt(0, i)]);
    epoch_ = epoch;
  }
  return std::vector<int64_t>(order_.begin() + k * batchSize_,
                              order_.begin() + (k + 1) * batchSize_);
}

Setup prepare(Config config, const std::vector<std::string> &splits,
              std::ostream *log) {
  Setup setup;
  setup.data = dataSpecFromConfig(config);
  setup.device = parseDevice(config.getString("train.device", "cpu"));
  int64_t seed = config.getInt("train.seed", 1);
  if (seed < 0)
    throw Error(config.source() + ": train.seed must be non-negative");
  setup.seed = static_cast<uint64_t>(seed);
  int64_t threads = config.getInt("train.threads", 0);
  if (threads > 0)
    torch::set_num_threads(static_cast<int>(threads));
  setup.task = loadTaskData(setup.data, log, splits);
  setup.modelOptions =
      modelOptionsFromConfig(config, setup.task.input.size(), setup.task.output.size());
  setup.config = std::move(config);
  return setup;
}

namespace {

std::string describeModel(const ModelOptions &o) {
  std::ostringstream text;
  text << o.kind;
  if (o.kind == "fwp")
    text << " (" << o.layer.name << ", "
         << (o.layer.artifact.empty() ? "eager reference" : o.layer.artifact) << ")";
  text << ", " << o.stack.layers << " layers, hidden " << o.stack.hidden;
  if (o.kind != "lstm")
    text << ", " << o.stack.heads << " heads, FF x" << o.stack.ffMult;
  text << ", dropout " << o.stack.dropout;
  return text.str();
}

std::string formatMetricsLine(const Metrics &metrics) {
  std::ostringstream line;
  line << std::fixed << std::setprecision(4);
  for (const auto &[name, value] : metrics)
    line << "  " << name << " " << value;
  return line.str();
}

std::string quoteToml(const std::string &text) {
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\')
      quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

} // namespace

Metrics trainRun(const TrainRequest &request, std::ostream &log) {
  Config config = Config::fromFile(request.configPath);
  for (const auto &assignment : request.overrides)
    config.set(assignment);
  if (request.device)
    config.setValue("train.device", quoteToml(*request.device));
  if (request.reference)
    config.setValue("model.reference", "true");

  // One process per device; the processes of a job meet first (rank 0 then
  // makes missing data alone, the others read it afterwards).
  DistributedEnv distributed = distributedEnvFromEnvironment();
  distributed.timeout = distributedTimeoutFromConfig(config);
  torch::Device device = parseDevice(config.getString("train.device", "cpu"));
  if (device.is_cuda() && distributed.worldSize > 1) {
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(distributed.localRank));
    config.setValue("train.device", quoteToml(device.str()));
  }
  ProcessGroup group(distributed, device);
  std::ostream discard(nullptr);
  std::ostream &out = group.isMain() ? log : discard;
  if (!group.isMain())
    group.barrier();
  Setup setup = prepare(config, {"train", "valid", "test"}, &out);
  if (group.isMain())
    group.barrier();
  const Config &c = setup.config;
  LoopOptions loopOptions = loopOptionsFromConfig(c);
  loopOptions.interactive = request.interactive;
  AdamOptions adam = adamOptionsFromConfig(c);
  const int64_t batchSize = c.getInt("train.batch", 64);
  const int64_t evalBatch = c.getInt("train.eval_batch", batchSize);
  if (batchSize < 1 || evalBatch < 1)
    throw Error(c.source() + ": train.batch and train.eval_batch must be positive");
  c.checkUnused();
  // The global batch of a step: `parts` shares of train.batch examples.
  const int64_t parts = group.size() * loopOptions.accumulate;
  if (batchSize * parts > static_cast<int64_t>(setup.task.train.size()))
    throw Error(c.source() + ": a global batch of " + std::to_string(batchSize * parts) +
                " examples (train.batch " + std::to_string(batchSize) + " x " +
                std::to_string(group.size()) + " processes x train.accumulate " +
                std::to_string(loopOptions.accumulate) + ") exceeds the " +
                std::to_string(setup.task.train.size()) + " training examples");

  torch::manual_seed(setup.seed);
  TokenModel model(setup.modelOptions, setup.device);
  model->to(setup.device);
  auto optimizer = makeAdam(model->parameters(), adam);

  out << "model: " << describeModel(setup.modelOptions) << "; "
      << countParameters(*model) << " parameters\n"
      << "data: " << setup.data.task << " in " << setup.data.dir.string() << " ("
      << setup.task.train.size() << " train, " << setup.task.valid.size() << " valid, "
      << setup.task.test.size() << " test)\n"
      << "training: " << loopOptions.steps << " steps of batch " << batchSize;
  if (parts > 1)
    out << " x " << group.size() << " processes (" << group.backendName() << ") x "
        << loopOptions.accumulate << " micro-batches = " << batchSize * parts;
  out << " on " << setup.device << ", Adam lr " << adam.lr
      << (loopOptions.precision == "bf16" ? ", bf16 autocast" : "") << "; run folder "
      << loopOptions.runDir.string() << "\n";

  if (setup.modelOptions.kind == "fwp" && !setup.modelOptions.layer.artifact.empty())
    loopOptions.artifactDigest = fwp::artifactDigest(setup.modelOptions.layer.artifact);
  TrainingLoop loop(*model, *optimizer, loopOptions, c.toToml());
  loop.setProcessGroup(group);
  const bool resuming = request.resume || !request.resumeFrom.empty();
  // A fresh run never deletes a previous run's files unasked.
  if (group.isMain())
    prepareRunFolder(loopOptions.runDir, resuming, request.overwrite, out);
  group.barrier();
  if (resuming) {
    std::filesystem::path from = request.resumeFrom.empty()
                                     ? loopOptions.runDir / "last.pt"
                                     : std::filesystem::path(request.resumeFrom);
    if (!std::filesystem::exists(from))
      throw Error("--resume: " + from.string() + " does not exist");
    checkResumeConfig(from, c.toToml(), loopOptions.artifactDigest, request.allowConfigChange,
                      out);
    loop.resumeFrom(from, setup.device);
    out << "resumed from " << from.string() << " at step " << loop.step() << "\n";
  }
  if (group.isMain()) {
    std::filesystem::create_directories(loopOptions.runDir);
    writeFileAtomically(loopOptions.runDir / "config.toml",
                        [&](std::ostream &file) { file << c.toToml() << '\n'; });
  }

  const TaskData &task = setup.task;
  EpochSampler sampler(static_cast<int64_t>(task.train.size()), batchSize * parts,
                       mixSeed(setup.seed, 77));
  auto step = [&](const StepPart &part) {
    const std::vector<int64_t> global = sampler.indices(part.step);
    const std::vector<int64_t> mine(global.begin() + part.index * batchSize,
                                    global.begin() + (part.index + 1) * batchSize);
    Batch batch = makeBatch(task.train, mine, setup.device);
    torch::Tensor logits = model->forward(batch.input);
    SequenceMetrics batchMetrics(task.blankClass);
    batchMetrics.add(logits, batch);
    StepResult result;
    result.loss = sequenceLoss(logits, batch);
    result.metrics["acc"] = batchMetrics.result()["acc"];
    // The loss is a mean per scored target: parts combine by their counts.
    result.weight = (batch.target != kIgnore).sum().item<double>();
    return result;
  };
  auto validate = [&] {
    return evaluateModel(*model, task.valid, evalBatch, setup.device, task.blankClass, &group);
  };
  loop.run(step, validate);
  if (loop.interrupted())
    return {};

  // The paper reports the test score of the best-on-validation model.
  std::filesystem::path best = loopOptions.runDir / "best.pt";
  std::filesystem::path chosen =
      std::filesystem::exists(best) ? best : loopOptions.runDir / "last.pt";
  CheckpointMeta meta = loadCheckpoint(chosen, *model, nullptr, setup.device, false);
  model->eval();
  Metrics test =
      evaluateModel(*model, task.test, evalBatch, setup.device, task.blankClass, &group);
  out << "test (" << chosen.filename().string() << ", step " << meta.step
      << "):" << formatMetricsLine(test) << "\n";
  nlohmann::json record = {{"split", "test"}, {"checkpoint", chosen.filename().string()},
                           {"step", meta.step}};
  for (const auto &[name, value] : test)
    record[name] = value;
  if (group.isMain())
    writeFileAtomically(loopOptions.runDir / "test.json",
                        [&](std::ostream &file) { file << record.dump(2) << '\n'; });
  return test;
}

Metrics evaluateCheckpoint(const EvalRequest &request, std::ostream &log) {
  CheckpointMeta meta = readCheckpointMeta(request.checkpoint);
  Config config = Config::fromString(meta.config, request.checkpoint + " (its config)");
  for (const auto &assignment : request.overrides)
    config.set(assignment);
  if (request.device)
    config.setValue("train.device", quoteToml(*request.device));
  if (request.reference)
    config.setValue("model.reference", "true");
  Setup setup = prepare(config, {request.split}, &log);
  const int64_t batchSize = request.batchSize > 0
                                ? request.batchSize
                                : setup.config.getInt("train.eval_batch",
                                                      setup.config.getInt("train.batch", 64));
  setup.config.markUsed("name");
  setup.config.markUsed("train");
  setup.config.checkUnused();

  torch::manual_seed(setup.seed);
  TokenModel model(setup.modelOptions, setup.device);
  model->to(setup.device);
  loadCheckpoint(request.checkpoint, *model, nullptr, setup.device, false);
  model->eval();
  log << "model: " << describeModel(setup.modelOptions) << " (step " << meta.step
      << ")\n";
  return evaluateModel(*model, setup.task.split(request.split), batchSize,
                       setup.device, setup.task.blankClass);
}

} // namespace fwp::train
