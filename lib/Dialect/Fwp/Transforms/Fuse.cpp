//===- Fuse.cpp - Fuse reads of old fast weights into their writes --------===//

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace mlir::fwp {
#define GEN_PASS_DEF_FWPFUSE
#include "fwp/Dialect/Fwp/Transforms/Passes.h.inc"
} // namespace mlir::fwp

using namespace mlir;
using namespace mlir::fwp;

namespace {

/// The rank-one update of a write: W' = W + key (x) delta. Emits `delta`
/// for a delta write (beta (v - vbar)) right after it.
struct RankOneWrite {
  Value oldWeight, newWeight, key, delta;
};

RankOneWrite describe(Operation *write, OpBuilder &builder) {
  if (auto sum = dyn_cast<WriteSumOp>(write))
    return {sum.getWeight(), sum.getResult(), sum.getKey(), sum.getValue()};
  auto delta = cast<WriteDeltaOp>(write);
  builder.setInsertionPointAfter(delta);
  Location loc = delta.getLoc();
  Value diff = SubOp::create(builder, loc, delta.getValue(), delta.getRetrieved());
  Value update = ScaleOp::create(builder, loc, diff, delta.getBeta());
  return {delta.getWeight(), delta.getNewWeight(), delta.getKey(), update};
}

/// Rewrites every read of `write`'s old weight that comes after it.
void fuseReadsAfter(Operation *write) {
  Value oldWeight = write->getOperand(0);
  SmallVector<Operation *> reads;
  for (Operation *user : oldWeight.getUsers())
    if (user != write && user->getBlock() == write->getBlock() &&
        write->isBeforeInBlock(user) && isa<ReadOp, ReadTransposedOp>(user))
      reads.push_back(user);
  if (reads.empty())
    return;
  OpBuilder builder(write->getContext());
  RankOneWrite update = describe(write, builder);
  for (Operation *read : reads) {
    builder.setInsertionPoint(read);
    Location loc = read->getLoc();
    Value corrected;
    if (auto forward = dyn_cast<ReadOp>(read)) {
      // W^T q = W'^T q - delta (k . q)
      Value fresh = ReadOp::create(builder, loc, forward.getType(),
                                   update.newWeight, forward.getQuery());
      Value overlap = DotOp::create(builder, loc, update.key, forward.getQuery());
      corrected = SubOp::create(builder, loc, fresh,
                                ScaleOp::create(builder, loc, update.delta, overlap));
    } else {
      // W x = W' x - k (delta . x)
      auto transposed = cast<ReadTransposedOp>(read);
      Value fresh = ReadTransposedOp::create(builder, loc, transposed.getType(),
                                             update.newWeight, transposed.getValue());
      Value overlap = DotOp::create(builder, loc, update.delta, transposed.getValue());
      corrected = SubOp::create(builder, loc, fresh,
                                ScaleOp::create(builder, loc, update.key, overlap));
    }
    read->getResult(0).replaceAllUsesWith(corrected);
    read->erase();
  }
}

struct FwpFusePass : public mlir::fwp::impl::FwpFuseBase<FwpFusePass> {
  void runOnOperation() override {
    SmallVector<Operation *> writes;
    getOperation().walk([&](Operation *op) {
      if (isa<WriteSumOp, WriteDeltaOp>(op))
        writes.push_back(op);
    });
    for (Operation *write : writes)
      fuseReadsAfter(write);
  }
};

} // namespace
