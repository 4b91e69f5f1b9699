//===- HostBufferCache.h - Reused memory for kernels' large outputs -*- C++ -*-===//
//
// LibTorch's CPU allocator hands every large tensor back to the C library
// when it dies, and glibc returns such blocks (above its mmap threshold, or
// at the top of the heap past its trim threshold) to the kernel. The next
// call of a layer then page-faults on every 4 KiB page of its fresh outputs:
// 1.7 us a page in this project's VM, 13-33 % of delta_net's forward +
// backward at d = 32-64 (docs/benchmarks.md, "Session 10"). The compiled
// layers therefore take the tensors they write whole (outputs, tapes,
// gradients of the sequences) from this cache: blocks of the same rounded
// size are kept when their tensor dies and handed out again, up to a limit
// of idle bytes, the way PyTorch's CUDA caching allocator keeps device
// memory.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <cstdint>

#include <torch/types.h>

namespace fwp {

/// An uninitialised CPU tensor of `sizes` (contiguous) like torch::empty;
/// tensors of at least hostCacheMinimumBytes take memory that earlier such
/// tensors of the same rounded size gave back. The tensor behaves as any
/// other (resizable, shareable); its memory returns to the cache when its
/// last user drops it.
torch::Tensor emptyReusingMemory(at::IntArrayRef sizes, torch::TensorOptions options);

/// emptyReusingMemory filled with a copy of `source`, contiguous (for an
/// expanded or strided gradient a kernel reads whole).
torch::Tensor contiguousReusingMemory(const torch::Tensor &source);

/// Smaller tensors go to LibTorch's allocator: glibc reuses them without
/// page faults.
inline constexpr size_t hostCacheMinimumBytes = size_t{1} << 18;

/// Bytes idle in the cache at most (default 1 GiB, or FWP_HOST_CACHE_MIB
/// MiB; 0 turns the reuse off); a block given back beyond it is freed.
size_t hostCacheLimitBytes();
void setHostCacheLimitBytes(size_t bytes);

/// What the cache holds now (for tests and diagnostics).
struct HostCacheStatistics {
  size_t idleBytes = 0;     ///< kept, not in use
  size_t liveBytes = 0;     ///< handed out, in use
  int64_t reuses = 0;       ///< allocations served from kept blocks
  int64_t allocations = 0;  ///< allocations that took new memory
};
HostCacheStatistics hostCacheStatistics();

/// Frees every idle block (tests; a process about to need its memory
/// elsewhere).
void releaseIdleHostMemory();

} // namespace fwp
