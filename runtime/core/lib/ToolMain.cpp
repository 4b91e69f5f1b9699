//===- ToolMain.cpp - The error boundary of fwp's command-line tools ------===//

#include "fwp/runtime/ToolMain.h"

#include "fwp/runtime/Layer.h"

#include <iostream>

namespace fwp {

int runReportingErrors(const std::function<int()> &body) {
  try {
    return body();
  } catch (const Error &e) {
    std::cerr << "error: " << e.what() << '\n';
  } catch (const c10::Error &e) {
    std::cerr << "error: " << e.what_without_backtrace() << '\n';
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << '\n';
  }
  return kToolFailure;
}

} // namespace fwp
