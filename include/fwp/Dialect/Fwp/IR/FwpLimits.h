//===- FwpLimits.h - Size limits of fwp layers ------------------*- C++ -*-===//
#ifndef FWP_DIALECT_FWP_IR_FWPLIMITS_H
#define FWP_DIALECT_FWP_IR_FWPLIMITS_H

#include <cstdint>

namespace mlir::fwp {
/// The largest size of a scan's dims and of a fast weight's sides: a d x d
/// state of this size is 64 MiB in f32 per (batch, head), and the kernels'
/// index arithmetic stays far from overflow. fwp.scan's verifier and
/// fwp-specialize-dims (fwp-compile --dim) refuse larger sizes.
inline constexpr int64_t kMaxDimSize = 4096;
/// The longest vector argument (a vector is O(n) memory; the GPU lowering
/// reports what does not fit its shared memory).
inline constexpr int64_t kMaxVectorSize = 65536;
} // namespace mlir::fwp

#endif // FWP_DIALECT_FWP_IR_FWPLIMITS_H
