//===- HostBufferCache.cpp - Reused memory for kernels' large outputs ----===//

#include "fwp/runtime/HostBufferCache.h"

#include "fwp/runtime/Layer.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

namespace fwp {
namespace {

// Blocks are kept by size rounded up to a granule, so that the calls of a
// training loop (same shapes every step) find each other's blocks.
constexpr size_t granule = size_t{64} << 10;
// The block's size sits in a header before the tensor's data (the deleter
// gets only the block's address); one cache line keeps the data aligned.
constexpr size_t header = 64;

size_t roundedBlockSize(size_t bytes) {
  return (bytes + header + granule - 1) / granule * granule;
}

size_t limitFromEnvironment() {
  const char *text = std::getenv("FWP_HOST_CACHE_MIB");
  if (text == nullptr || *text == '\0')
    return size_t{1} << 30;
  char *end = nullptr;
  errno = 0;
  unsigned long long mib = std::strtoull(text, &end, 10);
  if (*end != '\0' || errno != 0 || text[0] == '-' || mib > (size_t{1} << 30))
    throw Error(std::string("FWP_HOST_CACHE_MIB: expected a whole number of MiB "
                            "(0 turns the host buffer cache off), got '") +
                text + "'");
  return static_cast<size_t>(mib) << 20;
}

class Cache final : public c10::Allocator {
public:
  Cache() : limit(limitFromEnvironment()) {}

  c10::DataPtr allocate(size_t bytes) override {
    // Small blocks (a resize_ to a few elements) are glibc's business.
    if (bytes < hostCacheMinimumBytes)
      return c10::GetDefaultCPUAllocator()->allocate(bytes);
    size_t size = roundedBlockSize(bytes);
    void *block = takeIdle(size);
    if (block == nullptr) {
      block = std::aligned_alloc(header, size);
      if (block == nullptr) {
        // An idle block of another size may be what stands in the way.
        releaseIdle();
        block = std::aligned_alloc(header, size);
      }
      if (block == nullptr)
        throw std::bad_alloc();
      std::memcpy(block, &size, sizeof size);
    }
    return {static_cast<char *>(block) + header, block, &giveBack,
            c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void *destination, const void *source, size_t count) const override {
    default_copy_data(destination, source, count);
  }

  size_t limitBytes() {
    std::lock_guard<std::mutex> lock(mutex);
    return limit;
  }

  void setLimitBytes(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    limit = bytes;
    trimTo(limit);
  }

  void releaseIdle() {
    std::lock_guard<std::mutex> lock(mutex);
    trimTo(0);
  }

  HostCacheStatistics statistics() {
    std::lock_guard<std::mutex> lock(mutex);
    return stats;
  }

private:
  void *takeIdle(size_t size) {
    std::lock_guard<std::mutex> lock(mutex);
    stats.liveBytes += size;
    auto found = idle.find(size);
    if (found == idle.end()) {
      ++stats.allocations;
      return nullptr;
    }
    void *block = found->second;
    idle.erase(found);
    stats.idleBytes -= size;
    ++stats.reuses;
    return block;
  }

  // The deleter of every block this cache handed out.
  static void giveBack(void *block) {
    size_t size;
    std::memcpy(&size, block, sizeof size);
    instance().keep(block, size);
  }

  void keep(void *block, size_t size) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stats.liveBytes -= size;
      if (stats.idleBytes + size <= limit) {
        idle.emplace(size, block);
        stats.idleBytes += size;
        return;
      }
    }
    std::free(block);
  }

  // Frees idle blocks until at most `bytes` are idle; the mutex is held.
  void trimTo(size_t bytes) {
    for (auto it = idle.begin(); it != idle.end() && stats.idleBytes > bytes;) {
      std::free(it->second);
      stats.idleBytes -= it->first;
      it = idle.erase(it);
    }
  }

public:
  // Never destroyed: a tensor may die during static destruction and give
  // its block back after any destructor of this object would have run.
  static Cache &instance() {
    static Cache *cache = std::make_unique<Cache>().release();
    return *cache;
  }

private:
  std::mutex mutex;
  size_t limit;
  std::unordered_multimap<size_t, void *> idle;
  HostCacheStatistics stats;
};

} // namespace

torch::Tensor emptyReusingMemory(at::IntArrayRef sizes, torch::TensorOptions options) {
  // First, so that a bad FWP_HOST_CACHE_MIB fails every call, not only large ones.
  Cache &cache = Cache::instance();
  size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) *
                 c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  if (options.device().type() != c10::DeviceType::CPU || bytes < hostCacheMinimumBytes ||
      cache.limitBytes() == 0)
    return torch::empty(sizes, options);
  return at::detail::empty_generic(sizes, &cache,
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()),
                                   std::nullopt);
}

torch::Tensor contiguousReusingMemory(const torch::Tensor &source) {
  if (source.is_contiguous())
    return source;
  torch::Tensor copy = emptyReusingMemory(source.sizes(), source.options());
  copy.copy_(source);
  return copy;
}

size_t hostCacheLimitBytes() { return Cache::instance().limitBytes(); }

void setHostCacheLimitBytes(size_t bytes) { Cache::instance().setLimitBytes(bytes); }

HostCacheStatistics hostCacheStatistics() { return Cache::instance().statistics(); }

void releaseIdleHostMemory() { Cache::instance().releaseIdle(); }

} // namespace fwp
