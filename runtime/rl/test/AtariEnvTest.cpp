// Tests of the ALE environment and its torchbeast preprocessing, on real ROMs
// (installed by scripts/setup_ale.sh; the tests skip without them).
//
// References are independent of the code under test: OpenCV's outputs
// recorded once (cv2 5.0, INTER_AREA / COLOR_RGB2GRAY) for the image ops,
// hand-derived area averages, and a raw ALEInterface driven frame by frame
// for the wrapper semantics.
#include "fwp/rl/AtariEnv.h"
#include "fwp/rl/Impala.h" // benchmarkEnvironment
#include "fwp/runtime/Layer.h"

#include <ale/ale_interface.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;
using namespace fwp::rl;

namespace {

bool haveRom(const std::string &game) {
  const std::string dir = defaultRomDir();
  return !dir.empty() && fs::is_regular_file(fs::path(dir) / (game + ".bin"));
}

#define REQUIRE_ROM(game)                                                                          \
  if (!haveRom(game))                                                                              \
  GTEST_SKIP() << "ALE ROM '" << game << "' not found in '" << defaultRomDir()                     \
               << "' (run scripts/setup_ale.sh or set FWP_ALE_ROMS)"

/// Exact area average of a grayscale image over each destination cell, in
/// double precision (independent of the OpenCV-style float weights).
std::vector<double> areaAverage(const std::vector<double> &src, int h, int w, int dh, int dw) {
  std::vector<double> out(dh * dw, 0.0);
  const double sy = double(h) / dh, sx = double(w) / dw;
  for (int oy = 0; oy < dh; ++oy)
    for (int ox = 0; ox < dw; ++ox) {
      double total = 0;
      for (int y = int(std::floor(oy * sy)); y < std::min(h, int(std::ceil((oy + 1) * sy))); ++y) {
        const double wy = std::min<double>(y + 1, (oy + 1) * sy) - std::max<double>(y, oy * sy);
        for (int x = int(std::floor(ox * sx)); x < std::min(w, int(std::ceil((ox + 1) * sx)));
             ++x) {
          const double wx = std::min<double>(x + 1, (ox + 1) * sx) - std::max<double>(x, ox * sx);
          total += wy * wx * src[y * w + x];
        }
      }
      out[oy * dw + ox] = total / (sy * sx);
    }
  return out;
}

/// WarpFrame computed independently: BT.601 luma in double, exact area
/// average. Matches the fixed-point/float version to within 1 grey level.
std::vector<double> referenceWarp(const std::vector<uint8_t> &rgb, int h = 210, int w = 160) {
  std::vector<double> gray(h * w);
  for (int i = 0; i < h * w; ++i)
    gray[i] = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
  return areaAverage(gray, h, w, kFrameSize, kFrameSize);
}

std::vector<uint8_t> maxOf(const std::vector<uint8_t> &a, const std::vector<uint8_t> &b) {
  std::vector<uint8_t> out(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    out[i] = std::max(a[i], b[i]);
  return out;
}

/// Largest |frame - reference| over one 84x84 frame of the stack.
double maxDeviation(const uint8_t *frame, const std::vector<double> &reference) {
  double worst = 0;
  for (int i = 0; i < kFrameSize * kFrameSize; ++i)
    worst = std::max(worst, std::abs(frame[i] - reference[i]));
  return worst;
}

const uint8_t *slot(const AtariEnv &env, int i) {
  return env.observation() + i * kFrameSize * kFrameSize;
}

/// A raw ALE set up as gym's NoFrameskip-v4, seeded like AtariEnv.
struct RawAle {
  ale::ALEInterface ale;
  std::vector<ale::Action> actions;
  RawAle(const std::string &game, uint64_t seed) {
    ale::Logger::setMode(ale::Logger::Error);
    ale.setInt("random_seed", static_cast<int>(seed % 2147483647ull));
    ale.setFloat("repeat_action_probability", 0.0f);
    ale.setInt("max_num_frames_per_episode", 108000);
    ale.loadROM(resolveRom(defaultRomDir(), game));
    actions = ale.getMinimalActionSet();
  }
  /// `frames` frames of action index `a`; returns the summed reward and the
  /// RGB screens of the last two frames.
  float act(int a, int frames, std::vector<uint8_t> *second = nullptr,
            std::vector<uint8_t> *last = nullptr) {
    float reward = 0;
    for (int i = 0; i < frames; ++i) {
      reward += ale.act(actions[a]);
      if (i == frames - 2 && second)
        ale.getScreenRGB(*second);
      if (i == frames - 1 && last)
        ale.getScreenRGB(*last);
    }
    return reward;
  }
};

} // namespace

// --- image ops ----------------------------------------------------------------

TEST(ImageOps, GrayMatchesOpenCV) {
  // Hand-derived: weights sum to 2^15, so white stays 255; pure red is
  // (255 * 9798 + 2^14) >> 15 = 76.
  const uint8_t white[3] = {255, 255, 255}, red[3] = {255, 0, 0};
  uint8_t g = 0;
  rgbToGray(white, 1, &g);
  EXPECT_EQ(g, 255);
  rgbToGray(red, 1, &g);
  EXPECT_EQ(g, 76);

  // cv2.cvtColor(img, COLOR_RGB2GRAY) of img[y, x] = (3x, 5y, x + y) mod 256.
  const int h = 210, w = 160;
  std::vector<uint8_t> rgb(h * w * 3), gray(h * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t *p = &rgb[3 * (y * w + x)];
      p[0] = (x * 3) % 256, p[1] = (y * 5) % 256, p[2] = (x + y) % 256;
    }
  rgbToGray(rgb.data(), h * w, gray.data());
  int64_t sum = 0;
  for (uint8_t v : gray)
    sum += v;
  EXPECT_EQ(sum, 4190524);
  EXPECT_EQ(gray[0], 0);
  EXPECT_EQ(gray[100 * w + 50], 205);
  EXPECT_EQ(gray[209 * w + 159], 91);
  EXPECT_EQ(gray[37 * w + 91], 128);
}

TEST(ImageOps, AreaResizeHandExamples) {
  // 4x4 -> 2x2: plain 2x2 block means; 2.5 rounds half to even (OpenCV's
  // cvRound), 2.75 rounds up.
  const uint8_t blocks[16] = {1, 2, 9, 9, 3, 4, 9, 9, 1, 2, 0, 0, 3, 5, 0, 0};
  uint8_t out[4];
  resizeArea(blocks, 4, 4, out, 2, 2);
  EXPECT_EQ(out[0], 2); // (1+2+3+4)/4 = 2.5
  EXPECT_EQ(out[1], 9);
  EXPECT_EQ(out[2], 3); // (1+2+3+5)/4 = 2.75
  EXPECT_EQ(out[3], 0);

  // 5x5 -> 2x2 (scale 2.5): destination row 0 covers rows 0, 1 and half of
  // row 2 (weights 0.4, 0.4, 0.2); row 1 covers half of row 2, rows 3, 4.
  // Rows valued 10 * r: 0.4*0 + 0.4*10 + 0.2*20 = 8 and 0.2*20 + 0.4*30 +
  // 0.4*40 = 32, whatever the column.
  uint8_t rows[25];
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 5; ++c)
      rows[r * 5 + c] = static_cast<uint8_t>(10 * r);
  resizeArea(rows, 5, 5, out, 2, 2);
  EXPECT_EQ(out[0], 8);
  EXPECT_EQ(out[1], 8);
  EXPECT_EQ(out[2], 32);
  EXPECT_EQ(out[3], 32);
}

TEST(ImageOps, AreaResizeMatchesOpenCV) {
  // cv2.resize(img, (84, 84), interpolation=INTER_AREA) of the 210x160 image
  // img[y, x] = (7x + 13y + (x*y mod 11)) mod 256.
  const int h = 210, w = 160;
  std::vector<uint8_t> img(h * w), out(84 * 84);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      img[y * w + x] = static_cast<uint8_t>((x * 7 + y * 13 + (x * y) % 11) % 256);
  resizeArea(img.data(), h, w, out.data(), 84, 84);
  int64_t sum = 0;
  for (uint8_t v : out)
    sum += v;
  EXPECT_EQ(sum, 899472);
  EXPECT_EQ(out[0 * 84 + 0], 14);
  EXPECT_EQ(out[0 * 84 + 83], 100);
  EXPECT_EQ(out[83 * 84 + 0], 153);
  EXPECT_EQ(out[83 * 84 + 83], 235);
  EXPECT_EQ(out[41 * 84 + 42], 118);
  EXPECT_EQ(out[10 * 84 + 77], 90);
  EXPECT_EQ(out[60 * 84 + 5], 203);
}

// --- ROM checks ---------------------------------------------------------------

TEST(AtariEnv, UnknownGameAndBadRomAreErrorsNotExits) {
  REQUIRE_ROM("pong");
  try {
    AtariEnvConfig config;
    config.game = "no_such_game";
    AtariEnv env(config);
    FAIL() << "expected fwp::Error";
  } catch (const fwp::Error &e) {
    EXPECT_NE(std::string(e.what()).find("unknown game 'no_such_game'"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("pong"), std::string::npos) << e.what();
  }
  // A file named like a ROM that ALE does not know: ALE's loadROM would
  // exit(1); resolveRom must throw instead.
  const fs::path dir = fs::temp_directory_path() / "fwp_rl_bad_rom";
  fs::create_directories(dir);
  {
    std::ofstream bad(dir / "pong.bin", std::ios::binary);
    for (int i = 0; i < 2048; ++i)
      bad.put(static_cast<char>(i * 31));
  }
  try {
    resolveRom(dir.string(), "pong");
    FAIL() << "expected fwp::Error";
  } catch (const fwp::Error &e) {
    EXPECT_NE(std::string(e.what()).find("not a ROM ALE supports"), std::string::npos) << e.what();
  }
  // Not fs::remove_all: LibTorch's wheel exports its own std::filesystem
  // functions and its remove_all crashes when linked against it.
  fs::remove(dir / "pong.bin");
  fs::remove(dir);
}

// --- the wrapper chain --------------------------------------------------------

TEST(AtariEnv, ShapesAndMinimalActionSets) {
  REQUIRE_ROM("pong");
  REQUIRE_ROM("breakout");
  AtariEnvConfig config;
  config.game = "pong";
  AtariEnv pong(config);
  // ALE action codes: NOOP 0, FIRE 1, RIGHT 3, LEFT 4, RIGHTFIRE 11, LEFTFIRE 12.
  EXPECT_EQ(pong.actionSet(), (std::vector<int>{0, 1, 3, 4, 11, 12}));
  config.game = "breakout";
  AtariEnv breakout(config);
  EXPECT_EQ(breakout.actionSet(), (std::vector<int>{0, 1, 3, 4}));
  EXPECT_EQ(breakout.lives(), 5);

  pong.reset();
  // After a reset the stack holds four copies of one non-blank frame.
  const uint8_t *obs = pong.observation();
  int nonZero = 0;
  for (int i = 0; i < kFrameSize * kFrameSize; ++i) {
    nonZero += obs[i] != 0;
    for (int s = 1; s < kFrameStack; ++s)
      ASSERT_EQ(slot(pong, s)[i], obs[i]) << "slot " << s << " pixel " << i;
  }
  EXPECT_GT(nonZero, 1000);
}

TEST(AtariEnv, FrameSkipRepeatsFourFramesAndMaxPoolsTheLastTwo) {
  REQUIRE_ROM("pong");
  const uint64_t seed = 7;
  AtariEnvConfig config;
  config.game = "pong";
  config.seed = seed;
  AtariEnv env(config);
  RawAle raw("pong", seed);

  env.reset();
  // Replay the reset on the raw ALE: real reset, n single-frame no-ops, then
  // FireReset's FIRE (4 frames) and action 2 (4 frames), whose max-pooled
  // observation fills the stack.
  raw.ale.reset_game();
  raw.act(0, env.lastNoopCount());
  raw.act(1, 4);
  std::vector<uint8_t> second, last;
  raw.act(2, 4, &second, &last);
  std::vector<double> expected = referenceWarp(maxOf(second, last));
  for (int s = 0; s < kFrameStack; ++s)
    EXPECT_LE(maxDeviation(slot(env, s), expected), 1.0) << "slot " << s;
  EXPECT_EQ(env.frameNumber(), raw.ale.getFrameNumber());

  // Steps: the newest slot is the max of the 4-frame repeat's last two
  // frames, older slots shift down, rewards are summed over the 4 frames.
  const int actions[] = {2, 2, 3, 3, 5, 4, 0, 1, 2, 2, 2, 3, 3, 3, 4, 5, 0, 0, 2, 3};
  std::vector<double> previous = expected;
  int stepsWhereMaxMatters = 0;
  for (int a : actions) {
    const StepResult result = env.step(a);
    const float rawReward = raw.act(a, 4, &second, &last);
    EXPECT_EQ(result.reward, rawReward);
    EXPECT_FALSE(result.done);
    expected = referenceWarp(maxOf(second, last));
    EXPECT_LE(maxDeviation(slot(env, 3), expected), 1.0);
    EXPECT_LE(maxDeviation(slot(env, 2), previous), 1.0);
    // The pooled frame differs from the last frame alone wherever something
    // moved between the two (the ball, the paddles).
    if (maxDeviation(slot(env, 3), referenceWarp(last)) > 2.0)
      ++stepsWhereMaxMatters;
    previous = expected;
  }
  EXPECT_EQ(env.frameNumber(), raw.ale.getFrameNumber());
  EXPECT_GT(stepsWhereMaxMatters, 0) << "no step exercised the max over two frames";
}

TEST(AtariEnv, NoopStartsDrawOneToThirtyNoops) {
  REQUIRE_ROM("pong");
  RawAle raw("pong", 1);
  raw.ale.reset_game();
  const int64_t afterRealReset = raw.ale.getEpisodeFrameNumber();

  std::set<int> counts;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    AtariEnvConfig config;
    config.game = "pong";
    config.seed = seed;
    config.episodicLife = false; // every reset() is then a real reset
    AtariEnv env(config);
    for (int i = 0; i < 4; ++i) {
      const int64_t resetsBefore = env.gameResets();
      env.reset();
      EXPECT_EQ(env.gameResets(), resetsBefore + 1);
      const int n = env.lastNoopCount();
      EXPECT_GE(n, 1);
      EXPECT_LE(n, 30);
      counts.insert(n);
      // ALE's own reset frames, n no-ops, then FIRE and action 2 (4 frames each).
      EXPECT_EQ(env.episodeFrameNumber(), afterRealReset + n + 8);
    }
  }
  EXPECT_GE(counts.size(), 5u) << "no-op counts are not being drawn at random";

  AtariEnvConfig none;
  none.game = "pong";
  none.noopMax = 0;
  none.episodicLife = false;
  AtariEnv env(none);
  env.reset();
  EXPECT_EQ(env.lastNoopCount(), 0);
  EXPECT_EQ(env.episodeFrameNumber(), afterRealReset + 8);
}

TEST(AtariEnv, LostLifeEndsTheEpisodeButNotTheGame) {
  REQUIRE_ROM("breakout");
  AtariEnvConfig config;
  config.game = "breakout";
  config.seed = 3;
  AtariEnv env(config);
  env.reset();
  ASSERT_EQ(env.lives(), 5);
  ASSERT_EQ(env.gameResets(), 1);

  // NOOP leaves the paddle still; the ball launched by FireReset is lost.
  int lifeLosses = 0;
  bool sawGameOver = false;
  for (int step = 0; step < 20000 && !sawGameOver; ++step) {
    const int livesBefore = env.lives();
    const StepResult result = env.step(0);
    if (!result.done)
      continue;
    if (result.gameOver) {
      sawGameOver = true;
      break;
    }
    ++lifeLosses;
    EXPECT_EQ(env.lives(), livesBefore - 1);
    // EpisodicLife's reset continues the game: one no-op step, then
    // FireReset's two steps; no real reset, no no-op start.
    const int64_t frameBefore = env.frameNumber();
    env.reset();
    EXPECT_EQ(env.gameResets(), 1);
    EXPECT_EQ(env.frameNumber(), frameBefore + 3 * 4);
    EXPECT_EQ(env.lives(), livesBefore - 1);
  }
  ASSERT_TRUE(sawGameOver) << "Breakout did not end in 20000 NOOP steps";
  // Five lives: four life losses end episodes, the fifth ends the game.
  EXPECT_EQ(lifeLosses, 4);
  env.reset();
  EXPECT_EQ(env.gameResets(), 2);
  EXPECT_EQ(env.lives(), 5);
}

TEST(AtariEnv, ThroughputBenchmarkCountsEmulatorFrames) {
  REQUIRE_ROM("pong");
  AtariEnvConfig config;
  config.game = "pong";
  const EnvThroughput r = benchmarkEnvironment(config, 2, 2, 0.3);
  EXPECT_EQ(r.actors, 2);
  EXPECT_GT(r.steps, 0);
  // 4 frames per step, plus the no-op starts and ALE's reset frames.
  EXPECT_GE(r.frames, 4 * r.steps);
  EXPECT_GT(r.framesPerSecond(), 0);
}
