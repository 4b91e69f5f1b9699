//===- Impala.cpp - IMPALA with V-trace on Atari, end to end --------------===//
#include "fwp/rl/Impala.h"

#include "fwp/rl/VTrace.h"
#include "fwp/runtime/ArtifactContainer.h"
#include "fwp/runtime/AtomicFile.h"
#include "fwp/runtime/CheckpointFile.h"
#include "fwp/runtime/Layer.h"
#include "fwp/runtime/Progress.h"
#include "fwp/train/Training.h"

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;

namespace fwp::rl {

// --- config -------------------------------------------------------------------

namespace {

/// Typed access to one [section] of the config, remembering which keys were
/// read so unknown ones (typos) can be reported.
class Section {
public:
  Section(const toml::table &root, std::string name, std::string source)
      : name_(std::move(name)), source_(std::move(source)) {
    if (const toml::node *node = root.get(name_)) {
      table_ = node->as_table();
      if (!table_)
        throw Error(source_ + ": [" + name_ + "] must be a table");
    }
  }

  template <typename T> T get(const char *key, T fallback) {
    known_.push_back(key);
    if (!table_)
      return fallback;
    const toml::node *node = table_->get(key);
    if (!node)
      return fallback;
    std::optional<T> value;
    if constexpr (std::is_same_v<T, bool>)
      value = node->value_exact<bool>();
    else if constexpr (std::is_same_v<T, std::string>)
      value = node->value_exact<std::string>();
    else if constexpr (std::is_floating_point_v<T>)
      value = node->value<double>();
    else
      value = node->value_exact<int64_t>();
    if (!value)
      throw Error(source_ + ": " + name_ + "." + key + " must be " + typeName<T>() + " (line " +
                  std::to_string(node->source().begin.line) + ")");
    return static_cast<T>(*value);
  }

  void rejectUnknownKeys() const {
    if (!table_)
      return;
    for (const auto &[key, node] : *table_)
      if (std::find(known_.begin(), known_.end(), std::string(key.str())) == known_.end())
        throw Error(source_ + ": unknown key " + name_ + "." + std::string(key.str()) +
                    " (line " + std::to_string(node.source().begin.line) + ")");
  }

private:
  template <typename T> static const char *typeName() {
    if constexpr (std::is_same_v<T, bool>)
      return "a boolean";
    else if constexpr (std::is_same_v<T, std::string>)
      return "a string";
    else if constexpr (std::is_floating_point_v<T>)
      return "a number";
    else
      return "an integer";
  }

  std::string name_, source_;
  const toml::table *table_ = nullptr;
  std::vector<std::string> known_;
};

ImpalaConfig configFromTable(const toml::table &root, const std::string &source) {
  for (const auto &[key, node] : root) {
    const std::string k(key.str());
    if (k != "env" && k != "model" && k != "train")
      throw Error(source + ": unknown section or key '" + k + "' (line " +
                  std::to_string(node.source().begin.line) + "); expected [env], [model], [train]");
  }
  ImpalaConfig config;
  Section env(root, "env", source);
  AtariEnvConfig &e = config.env;
  e.game = env.get("game", e.game);
  e.romDir = env.get("rom_dir", e.romDir);
  e.noopMax = static_cast<int>(env.get<int64_t>("noop_max", e.noopMax));
  e.frameSkip = static_cast<int>(env.get<int64_t>("frame_skip", e.frameSkip));
  e.episodicLife = env.get("episodic_life", e.episodicLife);
  e.fireReset = env.get("fire_reset", e.fireReset);
  e.maxFramesPerEpisode =
      static_cast<int>(env.get<int64_t>("max_frames_per_episode", e.maxFramesPerEpisode));
  env.rejectUnknownKeys();

  Section model(root, "model", source);
  NetworkConfig &m = config.model;
  m.core = model.get("core", m.core);
  m.numActions = model.get("num_actions", m.numActions);
  m.lstmHidden = model.get("lstm_hidden", m.lstmHidden);
  m.hidden = model.get("hidden", m.hidden);
  m.layers = model.get("layers", m.layers);
  m.heads = model.get("heads", m.heads);
  m.headDim = model.get("head_dim", m.headDim);
  m.ff = model.get("ff", m.ff);
  m.backprop = model.get("backprop", m.backprop);
  m.lastActionInput = model.get("last_action_input", m.lastActionInput);
  m.artifact = model.get("artifact", m.artifact);
  model.rejectUnknownKeys();
  m.validate();

  Section train(root, "train", source);
  TrainConfig &t = config.train;
  t.totalSteps = train.get("total_steps", t.totalSteps);
  t.batchSize = train.get("batch_size", t.batchSize);
  t.unrollLength = train.get("unroll_length", t.unrollLength);
  t.actors = train.get("actors", t.actors);
  t.envsPerActor = train.get("envs_per_actor", t.envsPerActor);
  t.learningRate = train.get("learning_rate", t.learningRate);
  t.rmspropAlpha = train.get("rmsprop_alpha", t.rmspropAlpha);
  t.rmspropEps = train.get("rmsprop_eps", t.rmspropEps);
  t.gradNormClip = train.get("grad_norm_clip", t.gradNormClip);
  t.onNonFinite = train.get("on_nonfinite", t.onNonFinite);
  if (t.onNonFinite != "stop" && t.onNonFinite != "skip")
    throw Error(source + ": train.on_nonfinite must be \"stop\" or \"skip\"");
  t.discount = train.get("discount", t.discount);
  t.baselineCost = train.get("baseline_cost", t.baselineCost);
  t.entropyCost = train.get("entropy_cost", t.entropyCost);
  t.rewardClip = train.get("reward_clip", t.rewardClip);
  t.seed = static_cast<uint64_t>(train.get<int64_t>("seed", static_cast<int64_t>(t.seed)));
  t.torchThreads = train.get("torch_threads", t.torchThreads);
  t.checkpointEverySeconds = train.get("checkpoint_every_s", t.checkpointEverySeconds);
  t.logEverySeconds = train.get("log_every_s", t.logEverySeconds);
  t.device = train.get("device", t.device);
  train.rejectUnknownKeys();
  try {
    (void)torch::Device(t.device);
  } catch (const c10::Error &) {
    throw Error(source + ": train.device: '" + t.device + "' is not a device (cpu, cuda, cuda:1)");
  }

  const std::pair<const char *, int64_t> positive[] = {
      {"train.total_steps", t.totalSteps}, {"train.batch_size", t.batchSize},
      {"train.unroll_length", t.unrollLength}, {"train.actors", t.actors},
      {"train.envs_per_actor", t.envsPerActor}, {"train.torch_threads", t.torchThreads}};
  for (const auto &[field, value] : positive)
    if (value <= 0)
      throw Error(source + ": " + field + " must be positive, got " + std::to_string(value));
  if (!(t.learningRate > 0))
    throw Error(source + ": train.learning_rate must be positive");
  return config;
}

toml::table parseTable(const std::string &text, const std::string &source) {
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error &e) {
    std::ostringstream message;
    message << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
            << e.description();
    throw Error(message.str());
  }
}

std::string quoted(const std::string &s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string number(double value) {
  std::ostringstream out;
  out << std::setprecision(17) << value;
  std::string s = out.str();
  if (s.find_first_of(".eEni") == std::string::npos)
    s += ".0"; // keep it a TOML float
  return s;
}

std::string modelToToml(const ImpalaConfig &config) {
  const NetworkConfig &m = config.model;
  std::ostringstream out;
  out << "[model]\n"
      << "core = " << quoted(m.core) << "\n"
      << "num_actions = " << m.numActions << "\n"
      << "lstm_hidden = " << m.lstmHidden << "\n"
      << "hidden = " << m.hidden << "\n"
      << "layers = " << m.layers << "\n"
      << "heads = " << m.heads << "\n"
      << "head_dim = " << m.headDim << "\n"
      << "ff = " << m.ff << "\n"
      << "backprop = " << quoted(m.backprop) << "\n"
      << "last_action_input = " << (m.lastActionInput ? "true" : "false") << "\n";
  if (!m.artifact.empty())
    out << "artifact = " << quoted(m.artifact) << "\n";
  return out.str();
}

} // namespace

ImpalaConfig parseConfig(const std::string &tomlText, const std::string &source) {
  return configFromTable(parseTable(tomlText, source), source);
}

ImpalaConfig loadConfig(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw Error("cannot open config '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return parseConfig(text.str(), path);
}

std::string configToToml(const ImpalaConfig &config) {
  const AtariEnvConfig &e = config.env;
  const TrainConfig &t = config.train;
  std::ostringstream out;
  out << "[env]\n"
      << "game = " << quoted(e.game) << "\n"
      << "rom_dir = " << quoted(e.romDir) << "\n"
      << "noop_max = " << e.noopMax << "\n"
      << "frame_skip = " << e.frameSkip << "\n"
      << "episodic_life = " << (e.episodicLife ? "true" : "false") << "\n"
      << "fire_reset = " << (e.fireReset ? "true" : "false") << "\n"
      << "max_frames_per_episode = " << e.maxFramesPerEpisode << "\n\n"
      << modelToToml(config) << "\n"
      << "[train]\n"
      << "total_steps = " << t.totalSteps << "\n"
      << "batch_size = " << t.batchSize << "\n"
      << "unroll_length = " << t.unrollLength << "\n"
      << "actors = " << t.actors << "\n"
      << "envs_per_actor = " << t.envsPerActor << "\n"
      << "learning_rate = " << number(t.learningRate) << "\n"
      << "rmsprop_alpha = " << number(t.rmspropAlpha) << "\n"
      << "rmsprop_eps = " << number(t.rmspropEps) << "\n"
      << "grad_norm_clip = " << number(t.gradNormClip) << "\n"
      << "on_nonfinite = \"" << t.onNonFinite << "\"\n"
      << "discount = " << number(t.discount) << "\n"
      << "baseline_cost = " << number(t.baselineCost) << "\n"
      << "entropy_cost = " << number(t.entropyCost) << "\n"
      << "reward_clip = " << number(t.rewardClip) << "\n"
      << "seed = " << t.seed << "\n"
      << "torch_threads = " << t.torchThreads << "\n"
      << "checkpoint_every_s = " << number(t.checkpointEverySeconds) << "\n"
      << "log_every_s = " << number(t.logEverySeconds) << "\n"
      << "device = " << quoted(t.device) << "\n";
  return out.str();
}

ImpalaConfig applyOverrides(const ImpalaConfig &config,
                            const std::vector<std::string> &overrides) {
  if (overrides.empty())
    return config;
  toml::table root = parseTable(configToToml(config), "config");
  for (const std::string &item : overrides) {
    const size_t eq = item.find('='), dot = item.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq)
      throw Error("--set '" + item + "': expected section.key=value, e.g. train.actors=2");
    const std::string section = item.substr(0, dot), key = item.substr(dot + 1, eq - dot - 1);
    const std::string value = item.substr(eq + 1);
    toml::table parsed;
    try {
      parsed = toml::parse(key + " = " + value, std::string("--set"));
    } catch (const toml::parse_error &) {
      // Not a TOML value: take it as a bare string (--set env.game=breakout).
      parsed = parseTable(key + " = " + quoted(value), "--set " + item);
    }
    toml::table *target = root[section].as_table();
    if (!target)
      throw Error("--set '" + item + "': unknown section '" + section + "'");
    target->insert_or_assign(key, *parsed.get(key));
  }
  std::ostringstream text;
  text << root;
  return parseConfig(text.str(), "config with --set overrides");
}

// --- rollouts and loss ---------------------------------------------------------

Rollout concatRollouts(const std::vector<Rollout> &rollouts) {
  if (rollouts.empty())
    throw Error("concatRollouts: no rollouts");
  auto cat = [&](torch::Tensor Rollout::*field) {
    std::vector<torch::Tensor> parts;
    for (const Rollout &r : rollouts)
      parts.push_back(r.*field);
    return torch::cat(parts, 1);
  };
  Rollout out;
  out.frame = cat(&Rollout::frame);
  out.reward = cat(&Rollout::reward);
  out.done = cat(&Rollout::done);
  out.lastAction = cat(&Rollout::lastAction);
  out.action = cat(&Rollout::action);
  out.policyLogits = cat(&Rollout::policyLogits);
  out.baseline = cat(&Rollout::baseline);
  for (size_t i = 0; i < rollouts.front().initialState.size(); ++i) {
    std::vector<torch::Tensor> parts;
    for (const Rollout &r : rollouts)
      parts.push_back(r.initialState.at(i));
    out.initialState.push_back(torch::cat(parts, 0));
  }
  return out;
}

LossTerms impalaLoss(const AgentOutput &learnerOutput, const Rollout &batch,
                     const TrainConfig &config) {
  const int64_t steps = batch.reward.size(0) - 1;
  if (steps < 1)
    throw Error("impalaLoss: a rollout needs at least 2 entries");
  // Entry t+1 holds the action taken at entry t's frame and what followed.
  const torch::Tensor values = learnerOutput.baseline.slice(0, 0, steps);
  const torch::Tensor targetLogits = learnerOutput.policyLogits.slice(0, 0, steps);
  const torch::Tensor bootstrap = learnerOutput.baseline[steps];
  const torch::Tensor actions = batch.action.slice(0, 1);
  torch::Tensor rewards = batch.reward.slice(0, 1).to(torch::kFloat);
  if (config.rewardClip > 0)
    rewards = rewards.clamp(-config.rewardClip, config.rewardClip);
  const torch::Tensor discounts =
      batch.done.slice(0, 1).logical_not().to(torch::kFloat) * config.discount;

  const VTraceReturns vtrace =
      vtraceFromLogits(batch.policyLogits.slice(0, 1), targetLogits.detach(), actions, discounts,
                       rewards, values.detach(), bootstrap.detach());

  LossTerms loss;
  loss.policyGradient = -(actionLogProbs(targetLogits, actions) * vtrace.pgAdvantages).sum();
  loss.baseline = config.baselineCost * 0.5 * (vtrace.vs - values).pow(2).sum();
  loss.entropy = config.entropyCost *
                 (torch::softmax(targetLogits, -1) * torch::log_softmax(targetLogits, -1)).sum();
  loss.total = loss.policyGradient + loss.baseline + loss.entropy;
  return loss;
}

// --- learner ---------------------------------------------------------------------

namespace {
Rollout rolloutTo(const Rollout &r, const torch::Device &device) {
  Rollout out{r.frame.to(device),      r.reward.to(device), r.done.to(device),
              r.lastAction.to(device), r.action.to(device), r.policyLogits.to(device),
              r.baseline.to(device),   {}};
  for (const torch::Tensor &s : r.initialState)
    out.initialState.push_back(s.to(device));
  return out;
}
} // namespace

Learner::Learner(ImpalaNet net, const TrainConfig &config)
    : model(std::move(net)),
      optimizer(model->parameters(), torch::optim::RMSpropOptions(config.learningRate)
                                         .alpha(config.rmspropAlpha)
                                         .eps(config.rmspropEps)),
      device(config.device), config_(config) {
  if (device.is_cuda() && !torch::cuda::is_available())
    throw Error("train.device is '" + config.device + "' but CUDA is not available");
  // Before any optimizer step, so the optimizer's (lazily created) state
  // follows the parameters.
  model->to(device);
}

double Learner::learningRateAt(int64_t steps) const {
  const double total = static_cast<double>(config_.totalSteps);
  return config_.learningRate * (1.0 - std::min<double>(steps, total) / total);
}

LearnerStats Learner::update(const Rollout &batch) {
  LearnerStats stats;
  stats.learningRate = learningRateAt(stepsDone);
  for (auto &group : optimizer.param_groups())
    static_cast<torch::optim::RMSpropOptions &>(group.options()).lr(stats.learningRate);

  model->train();
  const Rollout onDevice = device.is_cpu() ? batch : rolloutTo(batch, device);
  CoreState state = onDevice.initialState;
  const AgentOutput output =
      model->forward({onDevice.frame, onDevice.reward, onDevice.done, onDevice.lastAction}, state,
                     /*sample=*/false);
  const LossTerms loss = impalaLoss(output, onDevice, config_);
  optimizer.zero_grad();
  loss.total.backward();
  // The norm before clipping: non-finite if the loss or any gradient is.
  stats.gradNorm = torch::nn::utils::clip_grad_norm_(model->parameters(), config_.gradNormClip);
  if (!std::isfinite(stats.gradNorm) || !std::isfinite(loss.total.item<double>())) {
    optimizer.zero_grad();
    if (config_.onNonFinite == "stop") {
      stoppedOnNonFinite = true;
      throw Error("the loss or a gradient is not finite at update " + std::to_string(updates + 1) +
                  "; the checkpoint keeps the last good state. Lower train.learning_rate, or "
                  "set train.on_nonfinite = \"skip\"");
    }
    stats.skipped = true;
    ++skippedUpdates;
    stepsDone += (batch.reward.size(0) - 1) * batch.reward.size(1);
    return stats;
  }
  optimizer.step();

  stepsDone += (batch.reward.size(0) - 1) * batch.reward.size(1);
  ++updates;
  stats.totalLoss = loss.total.item<double>();
  stats.pgLoss = loss.policyGradient.item<double>();
  stats.baselineLoss = loss.baseline.item<double>();
  stats.entropyLoss = loss.entropy.item<double>();
  return stats;
}

// --- checkpoints -----------------------------------------------------------------


std::string artifactDigestOf(const ImpalaConfig &config) {
  return config.model.artifact.empty() ? std::string() : fwp::artifactDigest(config.model.artifact);
}

void saveCheckpoint(const std::string &path, const ImpalaConfig &config, Learner &learner,
                    const std::string &artifactDigest) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string("fwp-atari-checkpoint-1")));
  archive.write("config", c10::IValue(configToToml(config)));
  torch::serialize::OutputArchive model, optimizer;
  learner.model->save(model);
  learner.optimizer.save(optimizer);
  archive.write("model", model);
  archive.write("optimizer", optimizer);
  archive.write("steps_done", torch::tensor(learner.stepsDone));
  archive.write("updates", torch::tensor(learner.updates));
  archive.write("episodes", torch::tensor(learner.episodes));
  std::string bytes;
  try {
    archive.save_to([&](const void *data, size_t size) {
      bytes.append(static_cast<const char *>(data), size);
      return size;
    });
  } catch (const c10::Error &e) {
    throw Error("cannot write checkpoint '" + path + "': " + e.what_without_backtrace());
  }
  CheckpointHeader header;
  header.trainer = "fwp-atari";
  header.codeVersion = fwpCodeVersion();
  header.config = configToToml(config);
  header.artifactDigest = artifactDigest;
  header.step = learner.stepsDone;
  writeCheckpointFile(path, header, bytes);
}

namespace {
torch::serialize::InputArchive openCheckpoint(const std::string &path,
                                              const torch::Device &device = torch::kCPU) {
  // The envelope's digest is verified before the archive is parsed.
  const CheckpointFile checkpoint = readCheckpointFile(path);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(checkpoint.payload.data(), checkpoint.payload.size(), device);
    c10::IValue format;
    archive.read("format", format);
    if (!format.isString() || format.toStringRef() != "fwp-atari-checkpoint-1")
      throw Error("'" + path + "' is not an fwp-atari checkpoint");
  } catch (const c10::Error &e) {
    throw Error("cannot read checkpoint '" + path + "': " + e.what_without_backtrace());
  }
  return archive;
}

int64_t readCounter(torch::serialize::InputArchive &archive, const char *key) {
  torch::Tensor value;
  archive.read(key, value);
  return value.item<int64_t>();
}
} // namespace

ImpalaConfig readCheckpointConfig(const std::string &path) {
  torch::serialize::InputArchive archive = openCheckpoint(path);
  c10::IValue config;
  archive.read("config", config);
  return parseConfig(config.toStringRef(), path + " (stored config)");
}

void loadCheckpoint(const std::string &path, Learner &learner) {
  torch::serialize::InputArchive archive = openCheckpoint(path, learner.device);
  try {
    torch::serialize::InputArchive model, optimizer;
    archive.read("model", model);
    archive.read("optimizer", optimizer);
    learner.model->load(model);
    learner.optimizer.load(optimizer);
    learner.stepsDone = readCounter(archive, "steps_done");
    learner.updates = readCounter(archive, "updates");
    learner.episodes = readCounter(archive, "episodes");
  } catch (const c10::Error &e) {
    throw Error("checkpoint '" + path + "' does not fit this model: " +
                e.what_without_backtrace());
  }
}

void loadCheckpointModel(const std::string &path, ImpalaNet &model) {
  torch::serialize::InputArchive archive = openCheckpoint(path);
  try {
    torch::serialize::InputArchive weights;
    archive.read("model", weights);
    model->load(weights);
  } catch (const c10::Error &e) {
    throw Error("checkpoint '" + path + "' does not fit this model: " +
                e.what_without_backtrace());
  }
}

// --- training ----------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Bounded blocking queue between actors and the learner.
class RolloutQueue {
public:
  explicit RolloutQueue(size_t capacity) : capacity_(capacity) {}

  bool push(Rollout rollout) {
    std::unique_lock<std::mutex> lock(mutex_);
    notFull_.wait(lock, [&] { return closed_ || queue_.size() < capacity_; });
    if (closed_)
      return false;
    queue_.push_back(std::move(rollout));
    notEmpty_.notify_one();
    return true;
  }
  std::optional<Rollout> pop() {
    std::unique_lock<std::mutex> lock(mutex_);
    notEmpty_.wait(lock, [&] { return closed_ || !queue_.empty(); });
    if (queue_.empty())
      return std::nullopt;
    Rollout rollout = std::move(queue_.front());
    queue_.pop_front();
    notFull_.notify_one();
    return rollout;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    notEmpty_.notify_all();
    notFull_.notify_all();
  }

private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable notEmpty_, notFull_;
  std::deque<Rollout> queue_;
  bool closed_ = false;
};

struct EpisodeRecord {
  EpisodeResult result;
  int actor = 0;
};

/// What actors and the learner share.
struct Shared {
  RolloutQueue queue;
  ImpalaNet actorModel;
  std::shared_mutex modelMutex; // actors read, the learner writes
  std::mutex episodesMutex;
  std::vector<EpisodeRecord> episodes;
  std::atomic<bool> stop{false};
  std::mutex errorMutex;
  std::exception_ptr error;

  Shared(size_t capacity, ImpalaNet model) : queue(capacity), actorModel(std::move(model)) {}

  void fail(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(errorMutex);
      if (!error)
        error = e;
    }
    stop = true;
    queue.close();
  }
};

torch::Tensor observationTensor(const AtariEnv &env) {
  return torch::from_blob(const_cast<uint8_t *>(env.observation()),
                          {kFrameStack, kFrameSize, kFrameSize}, torch::kUInt8);
}

/// One actor thread: `config.train.envsPerActor` envs stepped together.
void runActor(int index, const ImpalaConfig &config, Shared &shared) {
  at::set_num_threads(static_cast<int>(config.train.torchThreads));
  torch::NoGradGuard noGrad;
  const int64_t envCount = config.train.envsPerActor;
  const int64_t unroll = config.train.unrollLength;
  const int64_t actions = config.model.numActions;

  std::vector<AtariEnv> envs;
  for (int64_t e = 0; e < envCount; ++e) {
    AtariEnvConfig envConfig = config.env;
    envConfig.seed = config.train.seed * 1000003ull + static_cast<uint64_t>(index) * 1000 + e;
    envs.emplace_back(envConfig);
    envs.back().reset();
  }

  // The environment output at the current entry (torchbeast's initial():
  // reward 0, done true, last action 0) and the actor output that led to it.
  torch::Tensor reward = torch::zeros({envCount});
  torch::Tensor done = torch::ones({envCount}, torch::kBool);
  torch::Tensor lastAction = torch::zeros({envCount}, torch::kLong);
  torch::Tensor action = torch::zeros({envCount}, torch::kLong);
  torch::Tensor logits = torch::zeros({envCount, actions});
  torch::Tensor baseline = torch::zeros({envCount});
  CoreState state;
  {
    std::shared_lock<std::shared_mutex> lock(shared.modelMutex);
    state = shared.actorModel->initialState(envCount);
  }
  std::vector<double> scores(envCount, 0.0);
  std::vector<int64_t> gameSteps(envCount, 0);

  while (!shared.stop) {
    Rollout r;
    r.frame = torch::empty({unroll + 1, envCount, kFrameStack, kFrameSize, kFrameSize},
                           torch::kUInt8);
    r.reward = torch::empty({unroll + 1, envCount});
    r.done = torch::empty({unroll + 1, envCount}, torch::kBool);
    r.lastAction = torch::empty({unroll + 1, envCount}, torch::kLong);
    r.action = torch::empty({unroll + 1, envCount}, torch::kLong);
    r.policyLogits = torch::empty({unroll + 1, envCount, actions});
    r.baseline = torch::empty({unroll + 1, envCount});
    for (const torch::Tensor &s : state)
      r.initialState.push_back(s.clone());

    auto record = [&](int64_t t) {
      for (int64_t e = 0; e < envCount; ++e)
        r.frame[t][e].copy_(observationTensor(envs[e]));
      r.reward[t].copy_(reward);
      r.done[t].copy_(done);
      r.lastAction[t].copy_(lastAction);
      r.action[t].copy_(action);
      r.policyLogits[t].copy_(logits);
      r.baseline[t].copy_(baseline);
    };
    record(0);
    for (int64_t t = 0; t < unroll; ++t) {
      AgentInput input{r.frame[t].unsqueeze(0), reward.unsqueeze(0), done.unsqueeze(0),
                       lastAction.unsqueeze(0)};
      AgentOutput output;
      {
        std::shared_lock<std::shared_mutex> lock(shared.modelMutex);
        output = shared.actorModel->forward(input, state, /*sample=*/true);
      }
      action = output.action[0].clone();
      logits = output.policyLogits[0].clone();
      baseline = output.baseline[0].clone();
      const auto chosen = action.accessor<int64_t, 1>();
      auto rewardOut = reward.accessor<float, 1>();
      auto doneOut = done.accessor<bool, 1>();
      auto lastOut = lastAction.accessor<int64_t, 1>();
      for (int64_t e = 0; e < envCount; ++e) {
        const StepResult step = envs[e].step(static_cast<int>(chosen[e]));
        scores[e] += step.reward;
        ++gameSteps[e];
        if (step.gameOver) {
          std::lock_guard<std::mutex> lock(shared.episodesMutex);
          shared.episodes.push_back(
              {{scores[e], gameSteps[e], envs[e].episodeFrameNumber()}, index});
          scores[e] = 0;
          gameSteps[e] = 0;
        }
        if (step.done)
          envs[e].reset();
        rewardOut[e] = step.reward;
        doneOut[e] = step.done;
        lastOut[e] = chosen[e];
      }
      record(t + 1);
    }
    for (int64_t e = 0; e < envCount; ++e) {
      Rollout one;
      one.frame = r.frame.narrow(1, e, 1);
      one.reward = r.reward.narrow(1, e, 1);
      one.done = r.done.narrow(1, e, 1);
      one.lastAction = r.lastAction.narrow(1, e, 1);
      one.action = r.action.narrow(1, e, 1);
      one.policyLogits = r.policyLogits.narrow(1, e, 1);
      one.baseline = r.baseline.narrow(1, e, 1);
      for (const torch::Tensor &s : r.initialState)
        one.initialState.push_back(s.narrow(0, e, 1));
      if (!shared.queue.push(std::move(one)))
        return;
    }
  }
}

void appendLine(const std::string &path, const std::string &line) {
  std::ofstream out(path, std::ios::app);
  if (!out)
    throw Error("cannot append to '" + path + "'");
  out << line << "\n";
}

nlohmann::json jsonOrNull(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

} // namespace

int64_t train(const ImpalaConfig &configIn, const TrainOptions &options) {
  if (options.runDir.empty())
    throw Error("train: no run directory given");
  std::ostream *log = options.log;
  std::ostream discard(nullptr);
  std::ostream &notes = log ? *log : discard;
  ImpalaConfig config = configIn;
  const fs::path runDir = options.runDir;
  const std::string checkpointPath = (runDir / "checkpoint.pt").string();
  const std::string metricsPath = (runDir / "metrics.jsonl").string();
  const std::string episodesPath = (runDir / "episodes.jsonl").string();
  const std::string artifactDigest = artifactDigestOf(config);

  // fwp-train's run-folder rule, checked before the ROM so that a refused
  // start touches nothing: a folder holding a run needs --resume or
  // --overwrite, and a resume must match the stored configuration and
  // compiled layer (or be told --allow-config-change).
  if (options.resume) {
    if (!fs::is_regular_file(checkpointPath))
      throw Error("--resume: " + checkpointPath + " does not exist");
    // num_actions is not chosen but set from the game (checked below, when
    // the checkpoint is loaded): compare the rest.
    config.model.numActions = readCheckpointConfig(checkpointPath).model.numActions;
    fwp::train::checkResumeConfig(checkpointPath, configToToml(config), artifactDigest,
                                  options.allowConfigChange, notes);
  } else if (!options.overwrite) {
    fwp::train::prepareRunFolder(runDir, false, false, notes, kAtariRunFiles);
  }
  {
    AtariEnv probe(config.env); // validates the ROM before anything starts
    config.model.numActions = probe.numActions();
  }
  config.model.validate();
  const TrainConfig &tc = config.train;
  if (tc.batchSize % tc.envsPerActor != 0 && log)
    *log << "[train] note: batch_size " << tc.batchSize << " is not a multiple of envs_per_actor "
         << tc.envsPerActor << "; batches mix unrolls of different ages\n";

  if (!options.resume && options.overwrite)
    fwp::train::prepareRunFolder(runDir, false, true, notes, kAtariRunFiles);
  fs::create_directories(runDir);

  at::set_num_threads(static_cast<int>(tc.torchThreads));
  torch::manual_seed(tc.seed);
  Learner learner(ImpalaNet(config.model), tc);
  if (options.resume) {
    loadCheckpoint(checkpointPath, learner);
    if (log)
      *log << "[train] resuming " << checkpointPath << " at step " << learner.stepsDone << " ("
           << learner.updates << " updates)\n";
    // What was logged after the checkpoint is logged again: drop it.
    fwp::train::truncateJsonLines(metricsPath, "steps", learner.stepsDone);
    fwp::train::truncateJsonLines(episodesPath, "steps", learner.stepsDone);
  } else {
    fs::remove(metricsPath);
    fs::remove(episodesPath);
  }
  fwp::writeFileAtomically((fs::path(options.runDir) / "config.toml").string(), configToToml(config));
  if (learner.stepsDone >= tc.totalSteps) {
    if (log)
      *log << "[train] already at " << learner.stepsDone << " of " << tc.totalSteps
           << " steps; nothing to do\n";
    return learner.stepsDone;
  }

  Shared shared(static_cast<size_t>(tc.batchSize), ImpalaNet(config.model));
  copyParameters(*learner.model, *shared.actorModel);
  if (log)
    *log << "[train] " << config.env.game << ", core " << config.model.core << " (backprop "
         << config.model.resolvedBackprop() << "), " << tc.actors << " actors x "
         << tc.envsPerActor << " envs, batch " << tc.batchSize << " x unroll "
         << tc.unrollLength << ", " << tc.totalSteps << " steps\n";

  std::vector<std::thread> actors;
  for (int64_t i = 0; i < tc.actors; ++i)
    actors.emplace_back([&, i] {
      try {
        runActor(static_cast<int>(i), config, shared);
      } catch (...) {
        shared.fail(std::current_exception());
      }
    });

  // The runtime's progress printer, as plain lines on this loop's own clock
  // (train.log_every_s), beside the other [train] lines of the log.
  std::optional<fwp::Progress> progress;
  if (log) {
    fwp::ProgressOptions lines;
    lines.total = tc.totalSteps;
    lines.first = learner.stepsDone;
    lines.label = "[train] step";
    lines.unit = "frames";
    lines.unitsPerCount = config.env.frameSkip;
    lines.lineEvery = 0;
    lines.interactive = false;
    progress.emplace(lines, *log);
  }
  const auto start = Clock::now();
  auto lastLog = start, lastCheckpoint = start;
  int64_t stepsAtLastLog = learner.stepsDone;
  std::vector<double> recentScores; // for the progress line
  int64_t episodesInInterval = 0;
  double scoreSumInInterval = 0;
  LearnerStats stats;
  try {
    while (learner.stepsDone < tc.totalSteps && !shared.stop &&
           !(options.stopRequested && *options.stopRequested) &&
           !fwp::train::stopRequested()) {
      std::vector<Rollout> parts;
      while (static_cast<int64_t>(parts.size()) < tc.batchSize) {
        std::optional<Rollout> next = shared.queue.pop();
        if (!next)
          break;
        parts.push_back(std::move(*next));
      }
      if (static_cast<int64_t>(parts.size()) < tc.batchSize)
        break;
      stats = learner.update(concatRollouts(parts));
      {
        std::unique_lock<std::shared_mutex> lock(shared.modelMutex);
        copyParameters(*learner.model, *shared.actorModel);
      }
      std::vector<EpisodeRecord> finished;
      {
        std::lock_guard<std::mutex> lock(shared.episodesMutex);
        finished.swap(shared.episodes);
      }
      for (const EpisodeRecord &record : finished) {
        ++learner.episodes;
        nlohmann::json line = {{"episode", learner.episodes},
                               {"steps", learner.stepsDone},
                               {"frames", learner.stepsDone * config.env.frameSkip},
                               {"score", record.result.score},
                               {"episode_steps", record.result.steps},
                               {"episode_frames", record.result.frames},
                               {"actor", record.actor}};
        appendLine(episodesPath, line.dump());
        recentScores.push_back(record.result.score);
        ++episodesInInterval;
        scoreSumInInterval += record.result.score;
      }
      if (recentScores.size() > 100)
        recentScores.erase(recentScores.begin(), recentScores.end() - 100);

      const bool finishedTraining = learner.stepsDone >= tc.totalSteps;
      if (secondsSince(lastLog) >= tc.logEverySeconds || finishedTraining) {
        const double interval = secondsSince(lastLog);
        const double fps =
            (learner.stepsDone - stepsAtLastLog) * config.env.frameSkip / std::max(interval, 1e-9);
        double recentMean = NAN;
        if (!recentScores.empty()) {
          const size_t n = std::min<size_t>(recentScores.size(), 10);
          recentMean = 0;
          for (size_t i = recentScores.size() - n; i < recentScores.size(); ++i)
            recentMean += recentScores[i] / n;
        }
        nlohmann::json line = {
            {"steps", learner.stepsDone},
            {"frames", learner.stepsDone * config.env.frameSkip},
            {"updates", learner.updates},
            {"elapsed_s", secondsSince(start)},
            {"fps", fps},
            {"episodes", learner.episodes},
            {"interval_episodes", episodesInInterval},
            {"interval_mean_score",
             jsonOrNull(episodesInInterval ? scoreSumInInterval / episodesInInterval : NAN)},
            {"total_loss", stats.totalLoss},
            {"pg_loss", stats.pgLoss},
            {"baseline_loss", stats.baselineLoss},
            {"entropy_loss", stats.entropyLoss},
            {"grad_norm", stats.gradNorm},
            {"lr", stats.learningRate}};
        appendLine(metricsPath, line.dump());
        if (progress) {
          std::ostringstream details;
          details << "episodes " << learner.episodes;
          if (std::isfinite(recentMean))
            details << std::fixed << std::setprecision(2) << ", return (last "
                    << std::min<size_t>(recentScores.size(), 10) << ") " << recentMean;
          details << std::defaultfloat << std::setprecision(4) << "  loss " << stats.totalLoss
                  << std::scientific << std::setprecision(2) << "  lr " << stats.learningRate;
          progress->update(learner.stepsDone, {}, details.str(), /*forceLine=*/true);
        }
        lastLog = Clock::now();
        stepsAtLastLog = learner.stepsDone;
        episodesInInterval = 0;
        scoreSumInInterval = 0;
      }
      if (secondsSince(lastCheckpoint) >= tc.checkpointEverySeconds) {
        saveCheckpoint(checkpointPath, config, learner, artifactDigest);
        lastCheckpoint = Clock::now();
      }
    }
  } catch (...) {
    shared.fail(std::current_exception());
  }
  shared.stop = true;
  shared.queue.close();
  for (std::thread &actor : actors)
    actor.join();
  if (shared.error) {
    if (learner.stoppedOnNonFinite)
      saveCheckpoint(checkpointPath, config, learner, artifactDigest); // the last good state
    std::rethrow_exception(shared.error);
  }
  saveCheckpoint(checkpointPath, config, learner, artifactDigest);
  if (log)
    *log << "[train] wrote " << checkpointPath << " at step " << learner.stepsDone << " after "
         << std::fixed << std::setprecision(1) << secondsSince(start) << " s\n";
  return learner.stepsDone;
}

// --- evaluation ---------------------------------------------------------------------

std::vector<EpisodeResult> evaluate(const AtariEnvConfig &envConfig, ImpalaNet *model,
                                    const EvaluateOptions &options) {
  if (options.policy != "greedy" && options.policy != "sample" && options.policy != "random")
    throw Error("policy must be greedy, sample or random, got '" + options.policy + "'");
  const bool random = options.policy == "random";
  if (!random && !model)
    throw Error("evaluate: policy '" + options.policy + "' needs a model");
  AtariEnvConfig config = envConfig;
  config.seed = options.seed;
  AtariEnv env(config);
  if (!random && (*model)->config().numActions != env.numActions())
    throw Error("the model has " + std::to_string((*model)->config().numActions) +
                " actions but " + config.game + " has " + std::to_string(env.numActions()));
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int> uniform(0, env.numActions() - 1);
  torch::NoGradGuard noGrad;
  if (model)
    (*model)->eval();

  std::vector<EpisodeResult> results;
  for (int episode = 0; episode < options.episodes; ++episode) {
    env.reset();
    CoreState state = random ? CoreState{} : (*model)->initialState(1);
    float reward = 0;
    bool done = true;
    int64_t lastAction = 0;
    EpisodeResult result;
    while (true) {
      int action;
      if (random) {
        action = uniform(rng);
      } else {
        AgentInput input{observationTensor(env).view({1, 1, kFrameStack, kFrameSize, kFrameSize}),
                         torch::full({1, 1}, reward), torch::full({1, 1}, done, torch::kBool),
                         torch::full({1, 1}, lastAction, torch::kLong)};
        action = static_cast<int>(
            (*model)->forward(input, state, options.policy == "sample").action.item<int64_t>());
      }
      const StepResult step = env.step(action);
      result.score += step.reward;
      ++result.steps;
      if (step.gameOver) {
        result.frames = env.episodeFrameNumber();
        break;
      }
      if (step.done)
        env.reset();
      reward = step.reward;
      done = step.done;
      lastAction = action;
    }
    results.push_back(result);
    if (options.log)
      *options.log << "episode " << episode + 1 << "/" << options.episodes << ": score "
                   << result.score << ", " << result.steps << " steps, " << result.frames
                   << " frames" << std::endl;
  }
  return results;
}

// --- environment throughput -----------------------------------------------------------

EnvThroughput benchmarkEnvironment(const AtariEnvConfig &envConfig, int actors, int envsPerActor,
                                   double seconds) {
  if (actors <= 0 || envsPerActor <= 0 || !(seconds > 0))
    throw Error("benchmark: actors, envs per actor and seconds must be positive");
  std::vector<int64_t> frames(actors, 0), steps(actors, 0);
  std::vector<double> elapsed(actors, 0);
  std::vector<std::exception_ptr> errors(actors);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int a = 0; a < actors; ++a)
    threads.emplace_back([&, a] {
      try {
        std::vector<AtariEnv> envs;
        std::vector<int64_t> startFrames;
        for (int e = 0; e < envsPerActor; ++e) {
          AtariEnvConfig config = envConfig;
          config.seed = envConfig.seed + static_cast<uint64_t>(a) * 1000 + e;
          envs.emplace_back(config);
          startFrames.push_back(envs.back().frameNumber());
        }
        std::mt19937_64 rng(a);
        std::uniform_int_distribution<int> uniform(0, envs.front().numActions() - 1);
        ++ready;
        while (ready.load() < actors)
          std::this_thread::yield();
        const auto start = Clock::now();
        for (AtariEnv &env : envs)
          env.reset();
        while (secondsSince(start) < seconds) {
          for (AtariEnv &env : envs) {
            if (env.step(uniform(rng)).done)
              env.reset();
            ++steps[a];
          }
        }
        elapsed[a] = secondsSince(start);
        for (int e = 0; e < envsPerActor; ++e)
          frames[a] += envs[e].frameNumber() - startFrames[e];
      } catch (...) {
        errors[a] = std::current_exception();
        ++ready;
      }
    });
  for (std::thread &t : threads)
    t.join();
  for (const auto &e : errors)
    if (e)
      std::rethrow_exception(e);
  EnvThroughput result;
  result.actors = actors;
  result.envsPerActor = envsPerActor;
  result.seconds = *std::max_element(elapsed.begin(), elapsed.end());
  for (int a = 0; a < actors; ++a)
    result.frames += frames[a], result.steps += steps[a];
  return result;
}

} // namespace fwp::rl
