//===- Passes.h - All fwp passes --------------------------------*- C++ -*-===//
#ifndef FWP_PASSES_H
#define FWP_PASSES_H

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

namespace fwp {
/// Registers every fwp pass and the fwp pipelines.
void registerFwpPasses();
} // namespace fwp

#endif // FWP_PASSES_H
