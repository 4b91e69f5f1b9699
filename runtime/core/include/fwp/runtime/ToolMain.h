//===- ToolMain.h - The error boundary of fwp's command-line tools -*- C++ -*-===//
#pragma once

#include <functional>

namespace fwp {

/// The exit status of a tool that failed (bad input, a failed run).
inline constexpr int kToolFailure = 2;

/// Runs a tool's body and returns its status. An fwp::Error, a c10::Error
/// (without LibTorch's backtrace) or another std::exception becomes one line
/// "error: <what>" on stderr and kToolFailure.
int runReportingErrors(const std::function<int()> &body);

} // namespace fwp
