//===- FastWeightPatterns.cpp - Fast-weight ops on the CPU ----------------===//
//
// Reads and writes of the fast-weight matrices (memrefs), row by row
// with vector FMAs; a write updates the matrix in place when its old
// value is dead, else a scratch copy. Every such op works on each row
// independently, so one pass over the rows (a RowSweep) does the work of
// several ops on the same matrix: the op lowered first takes the later
// reads of the matrix (and in-place writes to it, and reads of what they
// write) whose other operands are already computed.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

/// Independent accumulators of a sum over the rows of a K-row matrix: one
/// chain of K dependent FMAs would wait on the FMA latency at every row.
static int64_t accumulatorsFor(int64_t rows) {
  for (int64_t count : {4, 2})
    if (rows % count == 0)
      return count;
  return 1;
}

/// Lanes of a reduction group: the rows whose sums one tree of shuffles
/// computes together (a 64-byte vector's worth), or 0 where the shapes do
/// not allow it (the rows are then summed one at a time).
static int64_t reductionGroup(MemRefType type) {
  int64_t rows = type.getDimSize(0), cols = type.getDimSize(1);
  int64_t lanes = 512 / type.getElementTypeBitWidth();
  int64_t group = std::min(lanes, rows);
  if (group < 2 || !llvm::isPowerOf2_64(group) || rows % group != 0 ||
      cols % group != 0)
    return 0;
  return group;
}

/// The sums of `partials` (G vectors of G lanes, G a power of two) as one
/// vector of G lanes: G - 1 levels of "shuffle the halves of two vectors
/// together and add" instead of G horizontal reductions. At each level a
/// vector holds the partial sums of `slots` rows, `width` lanes each.
static Value sumEach(ScanLowering &cpu, SmallVector<Value> partials) {
  int64_t group = partials.size();
  for (int64_t width = group; partials.size() > 1; width /= 2) {
    int64_t half = width / 2, slots = group / width;
    SmallVector<int64_t> low, high;
    for (int64_t operand : {0, 1})
      for (int64_t slot = 0; slot < slots; ++slot)
        for (int64_t lane = 0; lane < half; ++lane) {
          low.push_back(operand * group + slot * width + lane);
          high.push_back(operand * group + slot * width + half + lane);
        }
    SmallVector<Value> next;
    for (size_t i = 0; i < partials.size(); i += 2) {
      Value a = partials[i], b = partials[i + 1];
      next.push_back(cpu.add(
          vector::ShuffleOp::create(cpu.b, cpu.loc, a, b, low),
          vector::ShuffleOp::create(cpu.b, cpu.loc, a, b, high)));
    }
    partials = std::move(next);
  }
  return partials.front();
}

namespace {
/// One loop over the rows of a fast weight doing the row work of several
/// ops, in their order: readers see the row as the earlier writers of the
/// sweep left it. Rows go in groups (16 f32 rows when a row sum is taken
/// and the shape allows the shuffle tree, else 4/2/1).
class RowSweep {
public:
  /// Rows are read from `source` and, once written, stored to `target`
  /// (the same buffer for an update in place; a scratch matrix when the old
  /// value is still needed, which the sweep then fills as it goes).
  RowSweep(ScanLowering &cpu, Value source, Value target)
      : cpu(cpu), source(source), target(target) {
    type = cast<MemRefType>(source.getType());
    rowType = VectorType::get({type.getDimSize(1)}, type.getElementType());
  }

  /// y = sum_e q[e] W[e, :] of the row values at this point of the sweep.
  void read(Value result, Value query) {
    parts.push_back({Part::Read, result, cpu.spill(query), {}});
  }
  /// y[e] = W[e, :] . x
  void readTransposed(Value result, Value x) {
    parts.push_back({Part::RowSums, result, x, {}});
  }
  /// y[e] = W[e, :] . B[e, :]
  void rowDot(Value result, Value other) {
    parts.push_back({Part::RowSums, result, {}, other});
  }
  /// W[e, :] += k[e] v
  void addOuter(Value key, Value value) {
    parts.push_back({Part::AddOuter, {}, cpu.spill(key), value});
  }
  /// W[e, :] *= a[e]
  void scaleRows(Value factors) {
    parts.push_back({Part::Scale, {}, cpu.spill(factors), {}});
  }

  /// Emits the loop and records the readers' results.
  void emit();

private:
  struct Part {
    enum Kind { Read, RowSums, AddOuter, Scale } kind;
    Value result; // fwp value of a reader
    Value vector; // spilled q / k / a, or x of a transposed read
    Value other;  // v of a write, B of a row dot
  };
  ScanLowering &cpu;
  Value source, target;
  MemRefType type;
  VectorType rowType;
  SmallVector<Part> parts;
};
} // namespace

void RowSweep::emit() {
  int64_t rows = type.getDimSize(0);
  bool sumsRows = llvm::any_of(
      parts, [](const Part &part) { return part.kind == Part::RowSums; });
  int64_t tree = sumsRows ? reductionGroup(type) : 0;
  int64_t group = tree ? tree : accumulatorsFor(rows);
  int64_t accumulators = accumulatorsFor(group);
  Type element = type.getElementType();
  auto chunkType = VectorType::get({tree ? tree : 1}, element);
  int64_t chunks = tree ? type.getDimSize(1) / tree : 0;

  // Loop-carried accumulators of the reads; stack rows of the row sums.
  SmallVector<Value> inits;
  SmallVector<Value> sums(parts.size());
  SmallVector<SmallVector<Value>> xChunks(parts.size());
  for (auto [i, part] : llvm::enumerate(parts)) {
    if (part.kind == Part::Read)
      inits.append(accumulators, cpu.constant(rowType, 0.0));
    if (part.kind != Part::RowSums)
      continue;
    sums[i] = cpu.scratchRow(element, rows);
    if (tree && part.vector)
      for (int64_t c = 0; c < chunks; ++c)
        xChunks[i].push_back(vector::ExtractStridedSliceOp::create(
            cpu.b, cpu.loc, part.vector, ArrayRef<int64_t>{c * tree},
            ArrayRef<int64_t>{tree}, ArrayRef<int64_t>{1}));
  }
  auto chunkOf = [&](Value vector, int64_t c) -> Value {
    return vector::ExtractStridedSliceOp::create(
        cpu.b, cpu.loc, vector, ArrayRef<int64_t>{c * tree},
        ArrayRef<int64_t>{tree}, ArrayRef<int64_t>{1});
  };

  scf::ForOp loop = cpu.forRowGroups(
      source, group, inits,
      [&](Value first, ValueRange acc) -> SmallVector<Value> {
        SmallVector<Value> next(acc.begin(), acc.end());
        SmallVector<SmallVector<Value>> partials(parts.size());
        for (int64_t r = 0; r < group; ++r) {
          Value e = cpu.addIndex(first, r);
          Value row = cpu.row(source, e);
          bool written = false;
          unsigned accIndex = 0;
          for (auto [i, part] : llvm::enumerate(parts)) {
            switch (part.kind) {
            case Part::Read: {
              Value &sum = next[accIndex + r % accumulators];
              sum = vector::FMAOp::create(
                  cpu.b, cpu.loc, row,
                  cpu.splatElement(rowType, part.vector, e), sum);
              accIndex += accumulators;
              break;
            }
            case Part::RowSums: {
              if (!tree) { // one horizontal reduction per row
                Value rhs = part.vector ? part.vector : cpu.row(part.other, e);
                memref::StoreOp::create(cpu.b, cpu.loc,
                                        cpu.sum(cpu.mul(row, rhs)), sums[i],
                                        ValueRange{e});
                break;
              }
              Value partial;
              for (int64_t c = 0; c < chunks; ++c) {
                Value rhs =
                    part.vector
                        ? xChunks[i][c]
                        : vector::LoadOp::create(
                              cpu.b, cpu.loc, chunkType, part.other,
                              ValueRange{e, cpu.index(c * tree)});
                Value lhs = chunkOf(row, c);
                partial = partial ? vector::FMAOp::create(cpu.b, cpu.loc, lhs,
                                                          rhs, partial)
                                        .getResult()
                                  : cpu.mul(lhs, rhs);
              }
              partials[i].push_back(partial);
              break;
            }
            case Part::AddOuter:
              row = vector::FMAOp::create(
                  cpu.b, cpu.loc, cpu.splatElement(rowType, part.vector, e),
                  part.other, row);
              written = true;
              break;
            case Part::Scale:
              row = cpu.mul(row, cpu.splatElement(rowType, part.vector, e));
              written = true;
              break;
            }
          }
          if (written)
            vector::StoreOp::create(cpu.b, cpu.loc, row, target,
                                    ValueRange{e, cpu.index(0)});
        }
        for (auto [i, part] : llvm::enumerate(parts))
          if (part.kind == Part::RowSums && tree)
            vector::StoreOp::create(cpu.b, cpu.loc, sumEach(cpu, partials[i]),
                                    sums[i], ValueRange{first});
        return next;
      });

  unsigned accIndex = 0;
  for (auto [i, part] : llvm::enumerate(parts)) {
    if (part.kind == Part::Read) {
      Value total = loop.getResult(accIndex);
      for (int64_t a = 1; a < accumulators; ++a)
        total = cpu.add(total, loop.getResult(accIndex + a));
      accIndex += accumulators;
      cpu.set(part.result, total);
    } else if (part.kind == Part::RowSums) {
      cpu.set(part.result,
              vector::LoadOp::create(cpu.b, cpu.loc,
                                     VectorType::get({rows}, element), sums[i],
                                     ValueRange{cpu.index(0)}));
    }
  }
}

/// Adds to `sweep` the ops after `start` that can share its pass over the
/// rows of `current` (the fwp value the sweep's rows hold at that point):
/// reads of it, row dots with it, and writes to it that may update it in
/// place (the rows then hold the written value), as long as their other
/// operands are computed before `start`. Stops at the first other use of
/// a value the sweep holds. The driver skips the ops taken (their results
/// are set).
static void takeFollowers(RowSweep &sweep, Operation *start, Value current,
                          ScanLowering &cpu) {
  auto ready = [&](Value v) {
    Operation *def = v.getDefiningOp();
    return !def || (def->getBlock() == start->getBlock() &&
                    def->isBeforeInBlock(start));
  };
  llvm::SmallPtrSet<Value, 4> held{current};
  for (Operation *op = start->getNextNode(); op && !op->hasTrait<OpTrait::IsTerminator>();
       op = op->getNextNode()) {
    bool usesHeld = llvm::any_of(op->getOperands(),
                                 [&](Value v) { return held.contains(v); });
    if (!usesHeld)
      continue;
    if (!cpu.sameLoop(op, start))
      return; // e.g. a read in the epilogue of a matrix the core wrote
    auto othersReady = [&](ValueRange others) {
      return llvm::all_of(others, [&](Value v) {
        return !held.contains(v) && ready(v);
      });
    };
    if (auto read = dyn_cast<ReadOp>(op);
        read && read.getWeight() == current && othersReady(read.getQuery())) {
      sweep.read(read, cpu.in(read.getQuery()));
      continue;
    }
    if (auto read = dyn_cast<ReadTransposedOp>(op);
        read && read.getWeight() == current && othersReady(read.getValue())) {
      sweep.readTransposed(read, cpu.in(read.getValue()));
      continue;
    }
    if (auto dot = dyn_cast<RowDotOp>(op);
        dot && dot.getLhs() == current && othersReady(dot.getRhs())) {
      sweep.rowDot(dot, cpu.in(dot.getRhs()));
      continue;
    }
    if (auto write = dyn_cast<WriteSumOp>(op);
        write && write.getWeight() == current &&
        othersReady({write.getKey(), write.getValue()}) &&
        cpu.canOverwrite(current, op)) {
      sweep.addOuter(cpu.in(write.getKey()), cpu.in(write.getValue()));
      cpu.set(write, cpu.in(current));
      held.insert(current = write.getResult());
      continue;
    }
    if (auto scale = dyn_cast<ScaleRowsOp>(op);
        scale && scale.getWeight() == current &&
        othersReady(scale.getFactors()) && cpu.canOverwrite(current, op)) {
      sweep.scaleRows(cpu.in(scale.getFactors()));
      cpu.set(scale, cpu.in(current));
      held.insert(current = scale.getResult());
      continue;
    }
    // A delta write's retrieval W k reads the rows as they are here: it
    // joins the sweep, and the write (which needs all of W k) makes its own
    // pass afterwards without a read pass (lowerWriteDelta).
    if (auto write = dyn_cast<WriteDeltaOp>(op);
        write && write.getWeight() == current && othersReady(write.getKey())) {
      sweep.read(write.getRetrieved(), cpu.in(write.getKey()));
      return;
    }
    return; // another use of the rows: what follows sees them in order
  }
}

/// A sweep from `source` to `target` (see RowSweep) that starts at `start`
/// with `first` and takes the followers `takeFollowers` allows; `current`
/// is the fwp value the rows hold after `first`.
template <typename Fn>
static void sweepFrom(Operation *start, Value current, Value source,
                      Value target, ScanLowering &cpu, Fn first) {
  RowSweep sweep(cpu, source, target);
  first(sweep);
  takeFollowers(sweep, start, current, cpu);
  sweep.emit();
}

static LogicalResult lowerRead(ReadOp o, ScanLowering &cpu) {
  Value buffer = cpu.in(o.getWeight());
  sweepFrom(o, o.getWeight(), buffer, buffer, cpu,
            [&](RowSweep &sweep) { sweep.read(o, cpu.in(o.getQuery())); });
  return success();
}

static LogicalResult lowerReadTransposed(ReadTransposedOp o,
                                         ScanLowering &cpu) {
  Value buffer = cpu.in(o.getWeight());
  sweepFrom(o, o.getWeight(), buffer, buffer, cpu, [&](RowSweep &sweep) {
    sweep.readTransposed(o, cpu.in(o.getValue()));
  });
  return success();
}

static LogicalResult lowerRowDot(RowDotOp o, ScanLowering &cpu) {
  Value buffer = cpu.in(o.getLhs());
  sweepFrom(o, o.getLhs(), buffer, buffer, cpu, [&](RowSweep &sweep) {
    sweep.rowDot(o, cpu.in(o.getRhs()));
  });
  return success();
}

/// The buffer a write that starts a sweep stores its rows to: its operand's
/// when the old value is dead, else a new scratch matrix (which the sweep
/// fills: no separate copy).
static Value writeTarget(Operation *write, Value weight, ScanLowering &cpu) {
  if (cpu.canOverwrite(weight, write))
    return cpu.in(weight);
  return cpu.scratchMatrix(weight.getType());
}

static LogicalResult lowerScaleRows(ScaleRowsOp o, ScanLowering &cpu) {
  Value source = cpu.in(o.getWeight());
  Value target = writeTarget(o, o.getWeight(), cpu);
  cpu.set(o, target);
  sweepFrom(o, o.getResult(), source, target, cpu, [&](RowSweep &sweep) {
    sweep.scaleRows(cpu.in(o.getFactors()));
  });
  return success();
}

static LogicalResult lowerWriteSum(WriteSumOp o, ScanLowering &cpu) {
  Value source = cpu.in(o.getWeight());
  Value target = writeTarget(o, o.getWeight(), cpu);
  cpu.set(o, target);
  sweepFrom(o, o.getResult(), source, target, cpu, [&](RowSweep &sweep) {
    sweep.addOuter(cpu.in(o.getKey()), cpu.in(o.getValue()));
  });
  return success();
}

static LogicalResult lowerWriteDelta(WriteDeltaOp o, ScanLowering &cpu) {
  // Two passes: the read of W k (unless an earlier sweep over W took it),
  // then the update (with the later reads of the new weight).
  Value key = cpu.in(o.getKey()), value = cpu.in(o.getValue());
  Value source = cpu.in(o.getWeight());
  if (!cpu.in(o.getRetrieved())) {
    RowSweep read(cpu, source, source);
    read.read(o.getRetrieved(), key);
    read.emit();
  }
  Value retrieved = cpu.in(o.getRetrieved());
  Value delta = cpu.mul(cpu.sub(value, retrieved),
                        cpu.splat(value.getType(), cpu.in(o.getBeta())));
  Value target = writeTarget(o, o.getWeight(), cpu);
  cpu.set(o.getNewWeight(), target);
  sweepFrom(o, o.getNewWeight(), source, target, cpu,
            [&](RowSweep &sweep) { sweep.addOuter(key, delta); });
  return success();
}

void mlir::fwp::cpu::scheduleVectorWorkEarly(Block &body) {
  auto makesFastWeight = [](Operation *op) {
    return llvm::any_of(op->getResultTypes(),
                        [](Type type) { return isa<FastWeightType>(type); });
  };
  SmallVector<Operation *> ops;
  for (Operation &op : body.without_terminator())
    ops.push_back(&op);
  for (Operation *op : ops) {
    if (makesFastWeight(op) || op->getNumRegions() != 0)
      continue;
    Operation *after = nullptr; // the last operand definition in the body
    for (Value operand : op->getOperands())
      if (Operation *def = operand.getDefiningOp();
          def && def->getBlock() == &body &&
          (!after || after->isBeforeInBlock(def)))
        after = def;
    if (after)
      op->moveAfter(after);
    else
      op->moveBefore(&body.front());
  }
}

void mlir::fwp::cpu::populateFastWeightPatterns(CpuPatternSet &patterns) {
  patterns.add<ReadOp>(lowerRead);
  patterns.add<ReadTransposedOp>(lowerReadTransposed);
  patterns.add<ScaleRowsOp>(lowerScaleRows);
  patterns.add<RowDotOp>(lowerRowDot);
  patterns.add<WriteSumOp>(lowerWriteSum);
  patterns.add<WriteDeltaOp>(lowerWriteDelta);
}
