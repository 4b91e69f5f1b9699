//===- AtariEnv.h - ALE with the torchbeast Atari preprocessing -*- C++ -*-===//
//
// One Atari 2600 game behind the exact wrapper chain torchbeast (and the
// paper) used, innermost first:
//   ALE as gym's <Game>NoFrameskip-v4: no sticky actions, minimal action set,
//       108k-frame cap (ale-py 0.12's registration)
//   NoopReset(30):      1..30 single-frame no-ops after every real reset
//   MaxAndSkip(4):      repeat the action 4 frames, max-pool the last two
//   EpisodicLife:       a lost life ends the (training) episode; the game goes on
//   FireReset:          after every reset press FIRE, then action 2
//   WarpFrame:          RGB -> grayscale (OpenCV's COLOR_RGB2GRAY) -> 84x84
//                       (OpenCV's INTER_AREA)
//   FrameStack(4):      the last 4 frames, oldest first: [4, 84, 84] uint8
// Rewards are returned raw; the learner clips them.
//
// This header knows nothing of ALE or LibTorch; the .cpp holds the ALE.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fwp::rl {

constexpr int kFrameSize = 84;
constexpr int kFrameStack = 4;
constexpr int kObservationSize = kFrameStack * kFrameSize * kFrameSize;

struct AtariEnvConfig {
  std::string game = "pong";  ///< ROM name without ".bin", e.g. "breakout"
  std::string romDir;         ///< empty: defaultRomDir()
  int noopMax = 30;           ///< 0 disables the no-op starts
  int frameSkip = 4;
  bool episodicLife = true;
  bool fireReset = true;      ///< applied only to games with FIRE in their action set
  int maxFramesPerEpisode = 108000;
  uint64_t seed = 0;          ///< seeds ALE and the no-op draw
};

/// Where ROMs are looked for when AtariEnvConfig::romDir is empty: the
/// FWP_ALE_ROMS environment variable, else the directory scripts/setup_ale.sh
/// installed (compiled in).
std::string defaultRomDir();

/// "<romDir>/<game>.bin"; throws fwp::Error if it is missing or its MD5 is not
/// one ALE supports (ALE itself would exit the process), listing the ROMs
/// found in romDir.
std::string resolveRom(const std::string &romDir, const std::string &game);

struct StepResult {
  float reward = 0;     ///< raw game score change over the skipped frames
  bool done = false;    ///< end of the training episode (life lost or game over)
  bool gameOver = false;///< end of the real game (terminal or 108k-frame cap)
};

class AtariEnv {
public:
  explicit AtariEnv(const AtariEnvConfig &config);
  ~AtariEnv();
  AtariEnv(AtariEnv &&) noexcept;
  AtariEnv &operator=(AtariEnv &&) noexcept;

  int numActions() const;
  /// ALE action codes of the minimal action set (index -> ALE action).
  const std::vector<int> &actionSet() const;

  /// The full reset chain; after it observation() holds 4 copies of the
  /// first frame. After a lost life (not a game over) this continues the
  /// game (EpisodicLife), as torchbeast does.
  void reset();
  /// Applies action index `action` (into actionSet()). After done, call
  /// reset() before stepping again.
  StepResult step(int action);

  /// [4, 84, 84] uint8, oldest frame first.
  const uint8_t *observation() const;

  int lives() const;
  /// Emulator frames since the ROM was loaded / since the real game began.
  int64_t frameNumber() const;
  int64_t episodeFrameNumber() const;
  /// No-ops drawn at the last real reset (0 if none happened yet).
  int lastNoopCount() const;
  /// How many real (full) game resets happened so far.
  int64_t gameResets() const;

  /// The raw RGB screen [210, 160, 3] as ALE has it now (for tests).
  std::vector<uint8_t> screenRgb() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// --- image ops, exact to OpenCV 4.x/5.x (exposed for tests) ---------------

/// COLOR_RGB2GRAY for 8-bit: (9798 R + 19235 G + 3735 B + 2^14) >> 15.
void rgbToGray(const uint8_t *rgb, int pixels, uint8_t *gray);

/// cv::resize(..., INTER_AREA) of a single-channel 8-bit image when both
/// sizes shrink: area-weighted average with OpenCV's float weights, rounded
/// half to even.
void resizeArea(const uint8_t *src, int srcHeight, int srcWidth, uint8_t *dst,
                int dstHeight, int dstWidth);

} // namespace fwp::rl
