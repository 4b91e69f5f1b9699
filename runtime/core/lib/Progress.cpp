//===- Progress.cpp - The one progress printer of the runtime -------------===//

#include "fwp/runtime/Progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <unistd.h>

namespace fwp {

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    return "?";
  const long long s = std::llround(seconds);
  char buffer[48];
  if (s >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  else if (s >= 60)
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buffer, sizeof buffer, "%llds", s);
  return buffer;
}

std::string formatRate(double perSecond, const std::string &unit) {
  char buffer[64];
  const double magnitude = std::fabs(perSecond);
  const int decimals = !std::isfinite(perSecond) || magnitude >= 99.5 ? 0 : magnitude >= 9.995 ? 1 : 2;
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, perSecond);
  return std::string(buffer) + " " + unit + "/s";
}

namespace {

bool isTerminal(const std::ostream &out) {
  if (&out == &std::cerr || &out == &std::clog)
    return ::isatty(STDERR_FILENO) != 0;
  if (&out == &std::cout)
    return ::isatty(STDOUT_FILENO) != 0;
  return false;
}

double steadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// "loss 0.3012  acc 0.0625": loss first, then the rest by name.
std::string formatMetrics(const ProgressMetrics &metrics, double divisor) {
  std::string text;
  char buffer[96];
  auto add = [&](const std::string &name, double value) {
    std::snprintf(buffer, sizeof buffer, "%s%s %.4f", text.empty() ? "" : "  ", name.c_str(),
                  value / divisor);
    text += buffer;
  };
  if (auto it = metrics.find("loss"); it != metrics.end())
    add(it->first, it->second);
  for (const auto &[name, value] : metrics)
    if (name != "loss")
      add(name, value);
  return text;
}

} // namespace

Progress::Progress(ProgressOptions options, std::ostream &out)
    : options_(std::move(options)), out_(out),
      interactive_(options_.interactive ? *options_.interactive : isTerminal(out)),
      done_(options_.first), lastLine_(options_.first) {
  if (!options_.clock)
    options_.clock = steadySeconds;
  since_ = now();
}

Progress::Progress(int64_t totalSteps, int64_t firstStep, int64_t lineEvery, std::ostream &out,
                   std::optional<bool> interactive)
    : Progress(
          [&] {
            ProgressOptions options;
            options.total = totalSteps;
            options.first = firstStep;
            options.lineEvery = std::max<int64_t>(1, lineEvery);
            options.interactive = interactive;
            return options;
          }(),
          out) {}

Progress::~Progress() { finish(); }

double Progress::now() const { return options_.clock(); }

void Progress::pause() {
  if (!paused_) {
    activeSeconds_ += now() - since_;
    paused_ = true;
  }
}

void Progress::resume() {
  if (paused_) {
    since_ = now();
    paused_ = false;
  }
}

double Progress::countsPerSecond() const {
  const double seconds = activeSeconds_ + (paused_ ? 0.0 : now() - since_);
  return seconds > 0 ? static_cast<double>(done_ - options_.first) / seconds : 0.0;
}

std::string Progress::tail(int64_t done, const ProgressMetrics &metrics,
                           const std::string &details) const {
  std::string text;
  auto add = [&](const std::string &part) {
    if (!part.empty())
      text += "  " + part;
  };
  add(formatMetrics(metrics, 1.0));
  add(details);
  const double rate = countsPerSecond();
  add(formatRate(rate * options_.unitsPerCount, options_.unit));
  add("ETA " + formatDuration(rate > 0 ? static_cast<double>(options_.total - done) / rate : -1));
  return text;
}

void Progress::update(int64_t done, const ProgressMetrics &metrics, const std::string &details,
                      bool forceLine) {
  done_ = done;
  details_ = details;
  for (const auto &[name, value] : metrics) {
    window_[name] += value;
    auto it = smooth_.find(name);
    if (it == smooth_.end())
      smooth_[name] = value;
    else
      it->second = 0.9 * it->second + 0.1 * value;
  }
  ++windowUpdates_;
  const bool last = done >= options_.total;
  if (interactive_) {
    draw(last || forceLine);
    return;
  }
  const int64_t every = options_.lineEvery;
  const bool crossed = every > 0 && done / every > lastLine_ / every;
  if (crossed || last || forceLine)
    plainLine();
}

void Progress::plainLine() {
  ProgressMetrics averages;
  for (const auto &[name, sum] : window_)
    averages[name] = sum / static_cast<double>(std::max<int64_t>(1, windowUpdates_));
  out_ << options_.label << " " << done_ << "/" << options_.total
       << tail(done_, averages, details_) << "\n";
  out_.flush();
  lastLine_ = done_;
  window_.clear();
  windowUpdates_ = 0;
}

void Progress::draw(bool force) {
  const double t = now();
  if (!force && lastDraw_ && t - *lastDraw_ < options_.redrawSeconds)
    return;
  lastDraw_ = t;
  constexpr int64_t kWidth = 24;
  // Integer arithmetic: 9 of 50 is 18%, not 17.999...%.
  auto share = [&](int64_t of) {
    return options_.total > 0 ? std::clamp<int64_t>(done_ * of / options_.total, 0, of) : of;
  };
  const int64_t filled = share(kWidth);
  char percent[8];
  std::snprintf(percent, sizeof percent, "%3d%%", static_cast<int>(share(100)));
  out_ << "\r\033[2K" << options_.label << " " << done_ << "/" << options_.total << " ["
       << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] " << percent
       << tail(done_, smooth_, details_);
  out_.flush();
  barShown_ = true;
}

void Progress::note(const std::string &line) {
  if (barShown_)
    out_ << "\r\033[2K";
  out_ << line << "\n";
  if (barShown_)
    draw(true);
  out_.flush();
}

void Progress::finish() {
  if (barShown_) {
    out_ << "\n";
    barShown_ = false;
  }
  out_.flush();
}

} // namespace fwp
