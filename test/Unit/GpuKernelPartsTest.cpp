//===- GpuKernelPartsTest.cpp - The GPU kernel emitter's parts, alone -----===//
//
// The thread layout, block-size choice, shared-memory arena and barrier
// planning of convert-fwp-to-gpu (lib/Conversion/FwpToGPU/KernelEmitter.h),
// each checked against an independent enumeration of what it promises.
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"

#include "fwp/Dialect/Fwp/IR/FwpDialect.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace {

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

/// Every entry (e, m) of a K x V matrix is held by exactly one (thread,
/// column c, row r) of the block, with e = s + S r and m = tid / S +
/// (NT / S) c, s = tid % S; the masks say whether some held slot lies
/// outside the matrix.
TEST(GpuThreadLayout, EveryEntryHasExactlyOneOwner) {
  for (int64_t NT : {32, 64, 128, 256, 1024})
    for (int64_t K : {1, 3, 16, 17, 33, 64, 100})
      for (int64_t V : {1, 5, 16, 31, 64, 128, 200}) {
        MatrixLayout l = MatrixLayout::get(K, V, NT);
        SCOPED_TRACE(testing::Message() << "K=" << K << " V=" << V << " NT=" << NT);
        ASSERT_GE(l.S, 1);
        EXPECT_LE(l.S, kWarpSize);
        EXPECT_EQ(l.S & (l.S - 1), 0) << "S must be a power of two";
        EXPECT_EQ(l.S * l.colsPerPass, NT);
        std::vector<int> owners(K * V, 0);
        bool outsideRows = false, outsideCols = false;
        for (int64_t tid = 0; tid < NT; ++tid)
          for (int64_t c = 0; c < l.C; ++c)
            for (int64_t r = 0; r < l.R; ++r) {
              int64_t e = tid % l.S + l.S * r;
              int64_t m = tid / l.S + l.colsPerPass * c;
              outsideRows |= e >= K;
              outsideCols |= m >= V;
              if (e < K && m < V)
                ++owners[e * V + m];
            }
        for (int64_t i = 0; i < K * V; ++i)
          ASSERT_EQ(owners[i], 1) << "entry (" << i / V << ", " << i % V << ")";
        EXPECT_EQ(l.rowsMasked, outsideRows);
        EXPECT_EQ(l.colsMasked, outsideCols);
      }
}

/// The documented formula on hand-worked cases.
TEST(GpuThreadLayout, WorkedExamples) {
  // 16 x 16 on one warp: 2 threads per column, all 16 columns in one pass.
  MatrixLayout a = MatrixLayout::get(16, 16, 32);
  EXPECT_EQ(a.S, 2);
  EXPECT_EQ(a.colsPerPass, 16);
  EXPECT_EQ(a.C, 1);
  EXPECT_EQ(a.R, 8);
  // 64 columns on 32 threads: one thread per column, two columns each.
  MatrixLayout b = MatrixLayout::get(64, 64, 32);
  EXPECT_EQ(b.S, 1);
  EXPECT_EQ(b.C, 2);
  EXPECT_EQ(b.R, 64);
  // 3 x 5 on 256 threads: S = min(256 / 8, 4, 32) = 4 lanes per column,
  // one row each (one of them masked), 64 columns per pass (59 masked).
  MatrixLayout c = MatrixLayout::get(3, 5, 256);
  EXPECT_EQ(c.S, 4);
  EXPECT_EQ(c.colsPerPass, 64);
  EXPECT_EQ(c.C, 1);
  EXPECT_EQ(c.R, 1);
  EXPECT_TRUE(c.rowsMasked);
  EXPECT_TRUE(c.colsMasked);
}

TEST(GpuThreadLayout, BlockSizeFollowsTheFastWeightSize) {
  MLIRContext context;
  context.loadDialect<FwpDialect>();
  FloatType f32 = Float32Type::get(&context);
  auto weight = [&](int64_t K, int64_t V) -> Type {
    return FastWeightType::get(&context, K, V, f32);
  };
  Type vec = VectorType::get({64}, f32);
  // No matrix, or a small one: one warp.
  EXPECT_EQ(chooseBlockSize({vec, f32}), 32);
  EXPECT_EQ(chooseBlockSize({weight(16, 16), vec}), 32);
  // 64 x 64 = 4096 entries / 32 per thread = 128 threads.
  EXPECT_EQ(chooseBlockSize({weight(64, 64)}), 128);
  EXPECT_EQ(chooseBlockSize({weight(64, 64), weight(64, 64)}), 256);
  // Sizes round up to powers of two: 100 x 100 counts as 128 x 128.
  EXPECT_EQ(chooseBlockSize({weight(100, 100)}), 512);
  // Never more than 1024 threads.
  EXPECT_EQ(chooseBlockSize({weight(512, 512)}), 1024);
}

TEST(GpuSharedArena, ReusesFreedSlotsFirstFitAndMergesNeighbours) {
  SharedArena arena;
  int a = arena.allocate(4, false), b = arena.allocate(8, false),
      c = arena.allocate(2, false);
  EXPECT_EQ(arena.offsetOf(a), 0);
  EXPECT_EQ(arena.offsetOf(b), 4);
  EXPECT_EQ(arena.offsetOf(c), 12);
  EXPECT_EQ(arena.size(), 14);
  for (int slot : {a, b, c})
    arena.retain(slot);
  // b's 8 elements are free: a 6-element slot fits there, a 3-element one
  // not in the 2 left, so it goes on top.
  arena.release(b);
  EXPECT_EQ(arena.offsetOf(arena.allocate(6, false)), 4);
  EXPECT_EQ(arena.offsetOf(arena.allocate(3, false)), 14);
  EXPECT_EQ(arena.size(), 17);
  // a (0..4) and c (12..14) are freed, but the 2 free elements at 10..12
  // join c's: a 4-element slot fits at 0, a 4-element one at 10.
  arena.release(a);
  arena.release(c);
  EXPECT_EQ(arena.offsetOf(arena.allocate(4, false)), 0);
  EXPECT_EQ(arena.offsetOf(arena.allocate(4, false)), 10);
  EXPECT_EQ(arena.size(), 17);
}

TEST(GpuSharedArena, PersistentSlotsAndEmptyVectors) {
  SharedArena arena;
  int state = arena.allocate(5, /*persistent=*/true);
  arena.retain(state);
  arena.release(state);
  // Still taken: a new slot cannot reuse it.
  EXPECT_EQ(arena.offsetOf(arena.allocate(5, false)), 5);
  // A zero-sized value still gets one element (its slot has an address).
  int empty = arena.allocate(0, false);
  EXPECT_EQ(arena.offsetOf(empty), 10);
  EXPECT_EQ(arena.size(), 11);
}

/// Random allocations and releases: live slots never overlap, every slot
/// lies inside the arena, and memory is reused (the arena stays far below
/// the sum of all allocations).
TEST(GpuSharedArena, LiveSlotsNeverOverlap) {
  std::mt19937 rng(7);
  SharedArena arena;
  std::map<int, int64_t> live; // slot -> size
  int64_t total = 0;
  for (int step = 0; step < 2000; ++step) {
    if (live.size() < 3 || (live.size() < 40 && rng() % 2)) {
      int64_t size = 1 + rng() % 33;
      int slot = arena.allocate(size, false);
      arena.retain(slot);
      live[slot] = size;
      total += size;
    } else {
      auto it = std::next(live.begin(), rng() % live.size());
      arena.release(it->first);
      live.erase(it);
    }
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (auto [slot, size] : live) {
      ranges.push_back({arena.offsetOf(slot), arena.offsetOf(slot) + size});
      ASSERT_LE(ranges.back().second, arena.size());
    }
    llvm::sort(ranges);
    for (size_t i = 1; i < ranges.size(); ++i)
      ASSERT_LE(ranges[i - 1].second, ranges[i].first) << "step " << step;
  }
  EXPECT_LT(arena.size(), total / 4);
}

TEST(GpuBarrierPlanner, BarriersOnlyBetweenConflictingAccesses) {
  const int64_t NT = 64;
  auto needs = [&](std::vector<std::tuple<int64_t, int64_t, bool, bool>> first,
                   std::vector<std::tuple<int64_t, int64_t, bool, bool>> then) {
    BarrierPlanner planner(NT);
    for (auto [begin, size, write, owned] : first)
      planner.record(begin, size, write, owned);
    EXPECT_FALSE(planner.needsBarrier()) << "an empty epoch conflicts with nothing";
    planner.commit();
    for (auto [begin, size, write, owned] : then)
      planner.record(begin, size, write, owned);
    return planner.needsBarrier();
  };
  // Another thread may read what one wrote.
  EXPECT_TRUE(needs({{0, 16, true, false}}, {{0, 16, false, false}}));
  EXPECT_TRUE(needs({{0, 16, false, false}}, {{8, 16, true, false}}));
  EXPECT_TRUE(needs({{0, 16, true, true}}, {{0, 16, true, false}}));
  // Reads never conflict; nor do disjoint ranges.
  EXPECT_FALSE(needs({{0, 16, false, false}}, {{0, 16, false, false}}));
  EXPECT_FALSE(needs({{0, 16, true, false}}, {{16, 16, false, false}}));
  // Owned accesses with the same phase (begin mod NT): every element is
  // touched by the same thread both times.
  EXPECT_FALSE(needs({{0, 100, true, true}}, {{0, 100, false, true}}));
  EXPECT_FALSE(needs({{0, 100, true, true}}, {{NT, 36, false, true}}));
  // Same addresses, different phase: different threads.
  EXPECT_TRUE(needs({{0, 100, true, true}}, {{4, 96, false, true}}));
}

TEST(GpuBarrierPlanner, ABarrierStartsAnEmptyEpoch) {
  BarrierPlanner planner(32);
  planner.record(0, 8, true, false);
  EXPECT_TRUE(planner.hasPending());
  planner.commit();
  EXPECT_FALSE(planner.hasPending());
  EXPECT_FALSE(planner.epochEmpty());
  planner.record(0, 8, false, false);
  EXPECT_TRUE(planner.needsBarrier());
  planner.barrierPlaced();
  EXPECT_TRUE(planner.epochEmpty());
  EXPECT_FALSE(planner.needsBarrier());
  // Accesses recorded together are not checked against each other: they
  // are one step of code, which the emitter orders itself.
  BarrierPlanner fresh(32);
  fresh.record(0, 8, true, false);
  fresh.record(0, 8, false, false);
  EXPECT_FALSE(fresh.needsBarrier());
}

} // namespace
