//===- AtariEnv.cpp - ALE with the torchbeast Atari preprocessing ---------===//
//
// The wrapper chain of AtariEnv.h, written as one class whose methods are
// named after the gym wrappers they reproduce (baselines' atari_wrappers.py
// as torchbeast ships it), so each can be checked against that code.
//
//===----------------------------------------------------------------------===//
#include "fwp/rl/AtariEnv.h"

#include "fwp/runtime/Layer.h" // fwp::Error

#include <ale/ale_interface.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <sstream>

#ifndef FWP_ALE_ROM_DIR
#define FWP_ALE_ROM_DIR ""
#endif

namespace fs = std::filesystem;

namespace fwp::rl {

std::string defaultRomDir() {
  if (const char *dir = std::getenv("FWP_ALE_ROMS"); dir && *dir)
    return dir;
  return FWP_ALE_ROM_DIR;
}

std::string resolveRom(const std::string &romDir, const std::string &game) {
  if (romDir.empty())
    throw Error("no ROM directory: set FWP_ALE_ROMS or env.rom_dir (scripts/setup_ale.sh installs "
                "the ROMs into .deps/ale/roms)");
  if (!fs::is_directory(romDir))
    throw Error("ROM directory '" + romDir + "' does not exist (run scripts/setup_ale.sh)");
  const fs::path rom = fs::path(romDir) / (game + ".bin");
  if (!fs::is_regular_file(rom)) {
    std::vector<std::string> names;
    for (const auto &entry : fs::directory_iterator(romDir))
      if (entry.path().extension() == ".bin")
        names.push_back(entry.path().stem().string());
    std::sort(names.begin(), names.end());
    std::ostringstream message;
    message << "unknown game '" << game << "': no " << rom.string() << "; " << names.size()
            << " ROMs are there";
    for (size_t i = 0; i < names.size(); ++i)
      message << (i == 0 ? ": " : ", ") << names[i];
    throw Error(message.str());
  }
  // ALEInterface::loadROM calls exit() on a ROM it has no settings for, so
  // ask first.
  std::optional<std::string> supported;
  try {
    supported = ale::ALEInterface::isSupportedROM(rom);
  } catch (const std::exception &e) {
    throw Error("cannot read ROM " + rom.string() + ": " + e.what());
  }
  if (!supported)
    throw Error("ROM " + rom.string() + " is not a ROM ALE supports (unknown MD5)");
  return rom.string();
}

// --- image ops --------------------------------------------------------------

void rgbToGray(const uint8_t *rgb, int pixels, uint8_t *gray) {
  // OpenCV's 8-bit RGB2Gray: 15-bit fixed-point BT.601 weights.
  for (int i = 0; i < pixels; ++i) {
    const uint32_t r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    gray[i] = static_cast<uint8_t>((r * 9798u + g * 19235u + b * 3735u + (1u << 14)) >> 15);
  }
}

namespace {

struct AreaWeight {
  int dst;
  int src;
  float weight;
};

/// OpenCV's computeResizeAreaTab: the source cells each destination cell
/// overlaps, with the overlap as a fraction of the cell.
std::vector<AreaWeight> areaWeights(int srcSize, int dstSize) {
  const double scale = static_cast<double>(srcSize) / dstSize;
  std::vector<AreaWeight> weights;
  for (int d = 0; d < dstSize; ++d) {
    const double from = d * scale, to = from + scale;
    const double cell = std::min(scale, srcSize - from);
    int first = static_cast<int>(std::ceil(from)), last = static_cast<int>(std::floor(to));
    last = std::min(last, srcSize - 1);
    first = std::min(first, last);
    if (first - from > 1e-3)
      weights.push_back({d, first - 1, static_cast<float>((first - from) / cell)});
    for (int s = first; s < last; ++s)
      weights.push_back({d, s, static_cast<float>(1.0 / cell)});
    if (to - last > 1e-3)
      weights.push_back({d, last, static_cast<float>(std::min(std::min(to - last, 1.0), cell) / cell)});
  }
  return weights;
}

} // namespace

void resizeArea(const uint8_t *src, int srcHeight, int srcWidth, uint8_t *dst, int dstHeight,
                int dstWidth) {
  if (dstHeight > srcHeight || dstWidth > srcWidth)
    throw Error("resizeArea: only shrinking is supported");
  // Same float operations in the same order as OpenCV's ResizeArea_Invoker,
  // so results match it bit for bit.
  const std::vector<AreaWeight> xs = areaWeights(srcWidth, dstWidth);
  const std::vector<AreaWeight> ys = areaWeights(srcHeight, dstHeight);
  std::vector<float> row(dstWidth), sum(dstWidth);
  auto flush = [&](int dy) {
    for (int dx = 0; dx < dstWidth; ++dx) {
      const float rounded = std::nearbyint(sum[dx]); // half to even, like cvRound
      dst[dy * dstWidth + dx] = static_cast<uint8_t>(std::clamp(rounded, 0.0f, 255.0f));
    }
  };
  int current = -1;
  for (const AreaWeight &y : ys) {
    std::fill(row.begin(), row.end(), 0.0f);
    const uint8_t *line = src + static_cast<size_t>(y.src) * srcWidth;
    for (const AreaWeight &x : xs)
      row[x.dst] += static_cast<float>(line[x.src]) * x.weight;
    if (y.dst != current) {
      if (current >= 0)
        flush(current);
      current = y.dst;
      for (int dx = 0; dx < dstWidth; ++dx)
        sum[dx] = row[dx] * y.weight;
    } else {
      for (int dx = 0; dx < dstWidth; ++dx)
        sum[dx] += row[dx] * y.weight;
    }
  }
  if (current >= 0)
    flush(current);
}

// --- the environment ---------------------------------------------------------

struct AtariEnv::Impl {
  AtariEnvConfig config;
  ale::ALEInterface ale;
  std::vector<ale::Action> actions;
  std::vector<int> actionCodes;
  bool fireReset = false;
  std::mt19937_64 rng;

  int screenHeight = 0, screenWidth = 0;
  // MaxAndSkipEnv's _obs_buffer: persists across steps (zero at start), so an
  // episode ending early in a skip sees the previous step's frames, as there.
  std::vector<uint8_t> maxBuffer[2];
  std::vector<uint8_t> observationRgb; // the chain's current observation
  std::vector<uint8_t> grayScratch, warped;
  std::vector<uint8_t> stack;          // [4, 84, 84]

  int trackedLives = 0;                // EpisodicLifeEnv.lives
  bool wasRealDone = true;             // EpisodicLifeEnv.was_real_done
  int lastNoops = 0;
  int64_t gameResets = 0;

  explicit Impl(const AtariEnvConfig &cfg) : config(cfg), rng(cfg.seed * 0x9E3779B97F4A7C15ull + 1) {
    if (config.frameSkip < 2)
      throw Error("env.frame_skip must be >= 2 (the max is over the last two frames), got " +
                  std::to_string(config.frameSkip));
    if (config.noopMax < 0)
      throw Error("env.noop_max must be >= 0, got " + std::to_string(config.noopMax));
    const std::string romDir = config.romDir.empty() ? defaultRomDir() : config.romDir;
    const std::string rom = resolveRom(romDir, config.game);

    // gym's <Game>NoFrameskip-v4 as ale-py 0.12 registers it.
    ale.setInt("random_seed", static_cast<int>(cfg.seed % 2147483647ull));
    ale.setFloat("repeat_action_probability", 0.0f);
    ale.setInt("frame_skip", 1);
    ale.setInt("max_num_frames_per_episode", config.maxFramesPerEpisode);
    ale.loadROM(rom);

    actions = ale.getMinimalActionSet();
    for (ale::Action a : actions)
      actionCodes.push_back(static_cast<int>(a));
    if (actions.empty() || actions[0] != ale::PLAYER_A_NOOP)
      throw Error("game '" + config.game + "': action 0 of the minimal set is not NOOP");
    const bool hasFire =
        std::find(actions.begin(), actions.end(), ale::PLAYER_A_FIRE) != actions.end();
    if (config.fireReset && hasFire) {
      if (actions.size() < 3 || actions[1] != ale::PLAYER_A_FIRE)
        throw Error("game '" + config.game + "': FireReset needs FIRE as action 1 of at least 3");
      fireReset = true;
    }

    screenHeight = static_cast<int>(ale.getScreen().height());
    screenWidth = static_cast<int>(ale.getScreen().width());
    const size_t rgbSize = static_cast<size_t>(screenHeight) * screenWidth * 3;
    maxBuffer[0].assign(rgbSize, 0);
    maxBuffer[1].assign(rgbSize, 0);
    observationRgb.assign(rgbSize, 0);
    grayScratch.resize(static_cast<size_t>(screenHeight) * screenWidth);
    warped.resize(kFrameSize * kFrameSize);
    stack.assign(kObservationSize, 0);
  }

  // gym AtariEnv (frameskip 1): one emulator frame per step.
  void baseReset() {
    ale.reset_game();
    ++gameResets;
  }
  bool baseStep(int action, float &reward) {
    reward += static_cast<float>(ale.act(actions.at(action)));
    return ale.game_over(/*with_truncation=*/true);
  }
  void grabScreen(std::vector<uint8_t> &rgb) { ale.getScreenRGB(rgb); }

  // NoopResetEnv.reset: real reset, then 1..noop_max single-frame no-ops.
  void noopReset() {
    baseReset();
    int noops = 0;
    if (config.noopMax > 0)
      noops = std::uniform_int_distribution<int>(1, config.noopMax)(rng);
    lastNoops = noops;
    for (int i = 0; i < noops; ++i) {
      float ignored = 0;
      if (baseStep(0, ignored))
        baseReset();
    }
    grabScreen(observationRgb);
  }

  // MaxAndSkipEnv.step (its reset is NoopResetEnv's).
  StepResult maxAndSkipStep(int action) {
    StepResult result;
    for (int i = 0; i < config.frameSkip; ++i) {
      result.done = baseStep(action, result.reward);
      if (i == config.frameSkip - 2)
        grabScreen(maxBuffer[0]);
      if (i == config.frameSkip - 1)
        grabScreen(maxBuffer[1]);
      if (result.done)
        break;
    }
    for (size_t i = 0; i < observationRgb.size(); ++i)
      observationRgb[i] = std::max(maxBuffer[0][i], maxBuffer[1][i]);
    result.gameOver = result.done;
    return result;
  }

  // EpisodicLifeEnv.
  StepResult episodicLifeStep(int action) {
    StepResult result = maxAndSkipStep(action);
    if (!config.episodicLife)
      return result;
    wasRealDone = result.done;
    const int lives = ale.lives();
    if (lives < trackedLives && lives > 0)
      result.done = true;
    trackedLives = lives;
    return result;
  }
  void episodicLifeReset() {
    if (!config.episodicLife || wasRealDone)
      noopReset();
    else
      maxAndSkipStep(0); // no-op step out of the lost-life state
    trackedLives = ale.lives();
  }

  // FireResetEnv.reset: FIRE, then action 2; the observation is step 2's.
  void fireResetReset() {
    episodicLifeReset();
    if (!fireReset)
      return;
    if (episodicLifeStep(1).done)
      episodicLifeReset();
    if (episodicLifeStep(2).done) {
      const std::vector<uint8_t> kept = observationRgb;
      episodicLifeReset();
      observationRgb = kept;
    }
  }

  // WarpFrame.
  void warp() {
    rgbToGray(observationRgb.data(), screenHeight * screenWidth, grayScratch.data());
    resizeArea(grayScratch.data(), screenHeight, screenWidth, warped.data(), kFrameSize,
               kFrameSize);
  }

  // FrameStack(4).
  void resetStack() {
    warp();
    for (int i = 0; i < kFrameStack; ++i)
      std::copy(warped.begin(), warped.end(), stack.begin() + i * kFrameSize * kFrameSize);
  }
  void pushFrame() {
    warp();
    const size_t frame = kFrameSize * kFrameSize;
    std::copy(stack.begin() + frame, stack.end(), stack.begin());
    std::copy(warped.begin(), warped.end(), stack.end() - frame);
  }
};

namespace {
std::once_flag quietAle;
}

AtariEnv::AtariEnv(const AtariEnvConfig &config) {
  // ALE prints a banner per instance at its default log level.
  std::call_once(quietAle, [] { ale::Logger::setMode(ale::Logger::Error); });
  impl_ = std::make_unique<Impl>(config);
}
AtariEnv::~AtariEnv() = default;
AtariEnv::AtariEnv(AtariEnv &&) noexcept = default;
AtariEnv &AtariEnv::operator=(AtariEnv &&) noexcept = default;

int AtariEnv::numActions() const { return static_cast<int>(impl_->actions.size()); }
const std::vector<int> &AtariEnv::actionSet() const { return impl_->actionCodes; }

void AtariEnv::reset() {
  impl_->fireResetReset();
  impl_->resetStack();
}

StepResult AtariEnv::step(int action) {
  if (action < 0 || action >= numActions())
    throw Error("action " + std::to_string(action) + " out of range [0, " +
                std::to_string(numActions()) + ") for game '" + impl_->config.game + "'");
  StepResult result = impl_->episodicLifeStep(action);
  impl_->pushFrame();
  return result;
}

const uint8_t *AtariEnv::observation() const { return impl_->stack.data(); }
int AtariEnv::lives() const { return impl_->ale.lives(); }
int64_t AtariEnv::frameNumber() const { return impl_->ale.getFrameNumber(); }
int64_t AtariEnv::episodeFrameNumber() const { return impl_->ale.getEpisodeFrameNumber(); }
int AtariEnv::lastNoopCount() const { return impl_->lastNoops; }
int64_t AtariEnv::gameResets() const { return impl_->gameResets; }

std::vector<uint8_t> AtariEnv::screenRgb() const {
  std::vector<uint8_t> rgb;
  impl_->ale.getScreenRGB(rgb);
  return rgb;
}

} // namespace fwp::rl
