//===- ProgressTest.cpp - The one progress printer ------------------------===//
//
// fwp::Progress (Progress.h) with a clock the test advances: the plain lines
// (when they appear, window averages, rate and ETA worked out by hand), the
// bar's throttling, pause/resume, resumed counts, forced lines, and the
// duration and rate formats.
//
//===----------------------------------------------------------------------===//

#include "fwp/runtime/Progress.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

/// A clock the test moves by hand (binary fractions: exact sums).
struct FakeClock {
  double seconds = 1000.0;
  std::function<double()> function() {
    return [this] { return seconds; };
  }
};

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

size_t count(const std::string &text, const std::string &what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

} // namespace

TEST(Progress, DurationAndRateFormats) {
  EXPECT_EQ(fwp::formatDuration(3725), "1h02m");
  EXPECT_EQ(fwp::formatDuration(187), "3m07s");
  EXPECT_EQ(fwp::formatDuration(12.4), "12s");
  EXPECT_EQ(fwp::formatDuration(0), "0s");
  EXPECT_EQ(fwp::formatDuration(59.6), "1m00s");
  EXPECT_EQ(fwp::formatDuration(-1), "?");
  EXPECT_EQ(fwp::formatDuration(std::numeric_limits<double>::infinity()), "?");
  EXPECT_EQ(fwp::formatRate(1.5234, "steps"), "1.52 steps/s");
  EXPECT_EQ(fwp::formatRate(0, "steps"), "0.00 steps/s");
  EXPECT_EQ(fwp::formatRate(23.44, "MiB"), "23.4 MiB/s");
  EXPECT_EQ(fwp::formatRate(9.999, "batches"), "10.0 batches/s");
  EXPECT_EQ(fwp::formatRate(107.3, "frames"), "107 frames/s");
  EXPECT_EQ(fwp::formatRate(12345.6, "frames"), "12346 frames/s");
}

TEST(Progress, PlainLinesAtEveryMultipleWithWindowAveragesRateAndEta) {
  FakeClock clock;
  std::ostringstream out;
  fwp::ProgressOptions options;
  options.total = 10;
  options.lineEvery = 4;
  options.clock = clock.function();
  {
    fwp::Progress progress(options, out);
    EXPECT_FALSE(progress.interactive()) << "a string stream is no terminal";
    for (int s = 1; s <= 10; ++s) {
      clock.seconds += 0.5; // 2 steps per second
      progress.update(s, {{"loss", double(s)}, {"acc", 0.25}});
    }
  }
  // Lines when the count reaches 4, 8 and the total; loss averages (1..4),
  // (5..8), (9, 10); rate 2/s; ETA = remaining / 2.
  EXPECT_EQ(lines(out.str()),
            (std::vector<std::string>{"step 4/10  loss 2.5000  acc 0.2500  2.00 steps/s  ETA 3s",
                                      "step 8/10  loss 6.5000  acc 0.2500  2.00 steps/s  ETA 1s",
                                      "step 10/10  loss 9.5000  acc 0.2500  2.00 steps/s  ETA 0s"}));
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
}

TEST(Progress, ResumedCountsPausesAndJumpsOverMultiples) {
  FakeClock clock;
  std::ostringstream out;
  fwp::ProgressOptions options;
  options.total = 100;
  options.first = 50; // a resumed run: the rate counts this session's steps only
  options.lineEvery = 10;
  options.label = "MiB";
  options.unit = "MiB";
  options.clock = clock.function();
  fwp::Progress progress(options, out);
  clock.seconds += 4;
  progress.update(58); // no multiple of 10 crossed
  EXPECT_EQ(out.str(), "");
  progress.pause();
  clock.seconds += 1000; // e.g. validation: not counted
  progress.resume();
  clock.seconds += 1;
  progress.update(63); // crossed 60: 13 in 5 s
  EXPECT_EQ(out.str(), "MiB 63/100  2.60 MiB/s  ETA 14s\n");
  EXPECT_DOUBLE_EQ(progress.countsPerSecond(), 13.0 / 5.0);
  progress.note("a note");
  EXPECT_EQ(lines(out.str()).back(), "a note");
}

TEST(Progress, ForcedLinesDetailsAndUnitsPerCount) {
  FakeClock clock;
  std::ostringstream out;
  fwp::ProgressOptions options;
  options.total = 1000;
  options.lineEvery = 0; // only forced lines (fwp-atari prints on its own clock)
  options.label = "[train] step";
  options.unit = "frames";
  options.unitsPerCount = 4;
  options.clock = clock.function();
  fwp::Progress progress(options, out);
  for (int s = 1; s <= 50; ++s) {
    clock.seconds += 0.25;
    progress.update(s * 2, {}, "episodes 3");
  }
  EXPECT_EQ(out.str(), "");
  progress.update(100, {}, "episodes 3, return 1.50", /*forceLine=*/true);
  // 100 steps in 12.5 s: 8 steps/s = 32 frames/s; 900 steps left: 112.5 s.
  EXPECT_EQ(out.str(), "[train] step 100/1000  episodes 3, return 1.50  32.0 frames/s  ETA 1m53s\n");
}

TEST(Progress, TheBarIsRedrawnInPlaceAtMostEveryRedrawInterval) {
  FakeClock clock;
  std::ostringstream out;
  fwp::ProgressOptions options;
  options.total = 50;
  options.interactive = true;
  options.redrawSeconds = 0.125;
  options.clock = clock.function();
  {
    fwp::Progress progress(options, out);
    for (int s = 1; s <= 50; ++s) {
      clock.seconds += 1.0 / 64; // 8 updates per redraw interval
      progress.update(s, {{"loss", 1.0}});
    }
    // Drawn at updates 1, 9, 17, 25, 33, 41, 49 and (the end, always) 50.
    EXPECT_EQ(count(out.str(), "\r\033[2K"), 8u) << out.str();
    EXPECT_EQ(out.str().find('\n'), std::string::npos) << "one line, redrawn";
    progress.note("valid @ step 50");
    // The bar is cleared, the note printed on its own line, the bar redrawn.
    EXPECT_NE(out.str().find("\r\033[2Kvalid @ step 50\n\r\033[2Kstep 50/50"), std::string::npos)
        << out.str();
  }
  EXPECT_NE(out.str().find("step 50/50 [########################] 100%  loss 1.0000  64.0 "
                           "steps/s  ETA 0s"),
            std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("step 9/50 [####....................]  18%"), std::string::npos)
      << out.str();
  EXPECT_EQ(out.str().back(), '\n') << "the destructor ends the bar's line";
}
