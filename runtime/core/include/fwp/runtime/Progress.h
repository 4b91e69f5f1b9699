//===- Progress.h - The one progress printer of the runtime ------*- C++ -*-===//
//
// What every long loop prints while it runs (the trainers of fwp-train,
// fwp-lm and fwp-atari, corpus caching, long evaluations):
//
//   on a terminal  one line redrawn in place (at most every redrawSeconds):
//     step 120/400 [#######.................]  30%  loss 0.3012  1.52 steps/s  ETA 3m04s
//   otherwise      plain lines, one each time the count crosses a multiple
//                  of lineEvery (and at the end), metrics averaged over the
//                  updates since the previous line:
//     step 120/400  loss 0.3012  1.52 steps/s  ETA 3m04s
//
// The rate counts only the time between pause() and resume() excluded, so
// validation and checkpoints do not skew the ETA.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>

namespace fwp {

/// "1h02m", "3m07s", "12s"; "?" for a negative or non-finite time.
std::string formatDuration(double seconds);

/// "1.52 steps/s", "23.4 MiB/s", "107 frames/s": three significant digits
/// at most, no fewer than whole units.
std::string formatRate(double perSecond, const std::string &unit);

/// Named values shown with the count (e.g. a training step's loss).
using ProgressMetrics = std::map<std::string, double>;

struct ProgressOptions {
  int64_t total = 0;            ///< the count at which the work is done
  int64_t first = 0;            ///< the count when this session starts (a resumed run's step)
  std::string label = "step";   ///< "step 3/10"
  std::string unit = "steps";   ///< "1.52 steps/s"
  double unitsPerCount = 1.0;   ///< e.g. emulator frames per agent step
  /// Plain mode: a line each time the count crosses a multiple of this;
  /// 0: only lines forced by update(..., forceLine) and the last one.
  int64_t lineEvery = 1;
  /// Whether `out` is a terminal (the bar); default: it is std::cerr,
  /// std::clog or std::cout and that descriptor is a tty.
  std::optional<bool> interactive;
  double redrawSeconds = 0.1; ///< a bar is redrawn at most this often (except at the end)
  /// Seconds on a monotonic clock; default std::chrono::steady_clock (tests
  /// pass their own).
  std::function<double()> clock;
};

class Progress {
public:
  Progress(ProgressOptions options, std::ostream &out);
  /// A training loop's: "step s/total", a plain line every `lineEvery` steps.
  Progress(int64_t totalSteps, int64_t firstStep, int64_t lineEvery, std::ostream &out,
           std::optional<bool> interactive = std::nullopt);
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  /// Ends the bar's line.
  ~Progress();

  /// The count is now `done`; `metrics` are this update's values, `details`
  /// a text shown after them as it is. `forceLine`: print a plain line now.
  void update(int64_t done, const ProgressMetrics &metrics = {}, const std::string &details = {},
              bool forceLine = false);
  /// Prints a full line (e.g. validation results) without garbling the bar.
  void note(const std::string &line);
  /// Ends the bar's line.
  void finish();
  /// Excludes the time until resume() from the rate (validation, checkpoints).
  void pause();
  void resume();
  /// Counts per second over this session's active time (0 before any).
  double countsPerSecond() const;
  double stepsPerSecond() const { return countsPerSecond(); }
  /// Changes the total and the plain lines' spacing (e.g. once a loader
  /// knows its size).
  void setTotal(int64_t total) { options_.total = total; }
  void setLineEvery(int64_t lineEvery) { options_.lineEvery = lineEvery; }
  bool interactive() const { return interactive_; }

private:
  double now() const;
  std::string tail(int64_t done, const ProgressMetrics &metrics, const std::string &details) const;
  void draw(bool force);
  void plainLine();

  ProgressOptions options_;
  std::ostream &out_;
  bool interactive_;
  bool barShown_ = false;
  int64_t done_;
  int64_t lastLine_; ///< the count at the previous plain line
  std::string details_;
  ProgressMetrics window_; ///< sums since the previous plain line
  int64_t windowUpdates_ = 0;
  ProgressMetrics smooth_; ///< moving averages for the bar
  double activeSeconds_ = 0;
  double since_;
  bool paused_ = false;
  std::optional<double> lastDraw_;
};

} // namespace fwp
