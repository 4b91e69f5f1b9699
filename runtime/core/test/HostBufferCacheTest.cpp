//===- HostBufferCacheTest.cpp - Reused memory for large outputs ----------===//

#include "fwp/runtime/HostBufferCache.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

namespace {

/// Each test starts from an empty cache with the default limit.
class HostBufferCache : public testing::Test {
protected:
  void SetUp() override {
    fwp::releaseIdleHostMemory();
    limit = fwp::hostCacheLimitBytes();
  }
  void TearDown() override {
    fwp::setHostCacheLimitBytes(limit);
    fwp::releaseIdleHostMemory();
  }
  size_t limit = 0;
};

constexpr int64_t mib = int64_t{1} << 20;

TEST_F(HostBufferCache, ATensorOfTheSameSizeTakesTheMemoryBack) {
  fwp::HostCacheStatistics before = fwp::hostCacheStatistics();
  void *first;
  {
    torch::Tensor a = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
    first = a.data_ptr();
    EXPECT_EQ(fwp::hostCacheStatistics().allocations, before.allocations + 1);
    EXPECT_GT(fwp::hostCacheStatistics().liveBytes, before.liveBytes);
  }
  EXPECT_GE(fwp::hostCacheStatistics().idleBytes, static_cast<size_t>(mib));
  // Another shape of the same byte count: the same block.
  torch::Tensor b = fwp::emptyReusingMemory({mib / 16, 2}, torch::kDouble);
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(fwp::hostCacheStatistics().reuses, before.reuses + 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data_ptr()) % 64, 0u);
  EXPECT_TRUE(b.is_contiguous());
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{mib / 16, 2}));
  EXPECT_EQ(b.dtype(), torch::kDouble);
}

TEST_F(HostBufferCache, TensorsOfOtherSizesGetOtherMemory) {
  void *first;
  {
    torch::Tensor a = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
    first = a.data_ptr();
  }
  torch::Tensor larger = fwp::emptyReusingMemory({mib / 2}, torch::kFloat);
  EXPECT_NE(larger.data_ptr(), first);
  // Every byte is usable, and a live tensor's memory is never handed out.
  larger.fill_(3.0);
  torch::Tensor same = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
  torch::Tensor again = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
  EXPECT_NE(same.data_ptr(), again.data_ptr());
  same.fill_(1.0);
  again.fill_(2.0);
  EXPECT_EQ(same.sum().item<double>(), mib / 4);
  EXPECT_EQ(larger.sum().item<double>(), 3.0 * (mib / 2));
}

TEST_F(HostBufferCache, SmallTensorsAndOtherDevicesBypassTheCache) {
  fwp::HostCacheStatistics before = fwp::hostCacheStatistics();
  {
    torch::Tensor small = fwp::emptyReusingMemory({16, 16}, torch::kFloat);
    small.fill_(1.0);
    EXPECT_EQ(small.sum().item<double>(), 256.0);
  }
  fwp::HostCacheStatistics after = fwp::hostCacheStatistics();
  EXPECT_EQ(after.allocations, before.allocations);
  EXPECT_EQ(after.idleBytes, before.idleBytes);
}

TEST_F(HostBufferCache, KeepsNoMoreIdleBytesThanTheLimit) {
  fwp::setHostCacheLimitBytes(3 * mib / 2);
  {
    torch::Tensor a = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
    torch::Tensor b = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
  }
  EXPECT_LE(fwp::hostCacheStatistics().idleBytes, static_cast<size_t>(3 * mib / 2));
  EXPECT_GT(fwp::hostCacheStatistics().idleBytes, 0u);
  // Off: nothing is kept, and tensors still work.
  fwp::setHostCacheLimitBytes(0);
  EXPECT_EQ(fwp::hostCacheStatistics().idleBytes, 0u);
  fwp::HostCacheStatistics before = fwp::hostCacheStatistics();
  {
    torch::Tensor c = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
    c.fill_(1.0);
    EXPECT_EQ(c.sum().item<double>(), mib / 4);
  }
  EXPECT_EQ(fwp::hostCacheStatistics().allocations, before.allocations);
  EXPECT_EQ(fwp::hostCacheStatistics().idleBytes, 0u);
}

TEST_F(HostBufferCache, CachedTensorsResizeAndCopyLikeAnyOther) {
  torch::Tensor a = fwp::emptyReusingMemory({mib / 4}, torch::kFloat);
  a.copy_(torch::arange(mib / 4, torch::kFloat));
  a.resize_({mib}); // storage grows through the cache's allocator
  EXPECT_EQ(a.slice(0, 0, mib / 4).sum().item<double>(),
            torch::arange(mib / 4, torch::kDouble).sum().item<double>());
  torch::Tensor expanded = torch::ones({1, 1}).expand({512, 256});
  torch::Tensor copy = fwp::contiguousReusingMemory(expanded);
  EXPECT_TRUE(copy.is_contiguous());
  EXPECT_EQ(copy.sum().item<double>(), 512.0 * 256.0);
  torch::Tensor contiguous = torch::ones({512, 256});
  EXPECT_EQ(fwp::contiguousReusingMemory(contiguous).data_ptr(), contiguous.data_ptr());
}

TEST_F(HostBufferCache, ThreadsShareTheCacheSafely) {
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t, &failures] {
      std::mt19937 random(t);
      for (int i = 0; i < 200; ++i) {
        int64_t elements = (1 + random() % 4) * mib / 4;
        torch::Tensor x = fwp::emptyReusingMemory({elements}, torch::kFloat);
        x.fill_(static_cast<float>(t));
        if (x.sum().item<double>() != static_cast<double>(t) * elements)
          ++failures[t];
      }
    });
  for (std::thread &thread : threads)
    thread.join();
  for (int t = 0; t < 4; ++t)
    EXPECT_EQ(failures[t], 0) << "thread " << t;
  fwp::HostCacheStatistics after = fwp::hostCacheStatistics();
  EXPECT_EQ(after.liveBytes, 0u);
  EXPECT_LE(after.idleBytes, fwp::hostCacheLimitBytes());
  EXPECT_GT(after.reuses, 0);
}

} // namespace
