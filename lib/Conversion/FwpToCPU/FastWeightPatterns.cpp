//===- FastWeightPatterns.cpp - Fast-weight ops on the CPU ----------------===//
//
// Reads and writes of the fast-weight matrices (memrefs), row by row
// with vector FMAs; a write updates the matrix in place when its old
// value is dead, else a scratch copy.
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

static Value readMatrix(ScanLowering &cpu, Value matrix, Value query) {
  // y[m] = sum_e W[e, m] q[e], rows e in groups of `lanes`, one partial sum
  // per lane of the group.
  auto type = cast<MemRefType>(matrix.getType());
  auto resultType =
      VectorType::get({type.getDimSize(1)}, type.getElementType());
  int64_t lanes = accumulatorsFor(type.getDimSize(0));
  SmallVector<Value> zeros(lanes, cpu.constant(resultType, 0.0));
  Value queryRow = cpu.spill(query);
  scf::ForOp loop = cpu.forRowGroups(
      matrix, lanes, zeros,
      [&](Value first, ValueRange acc) -> SmallVector<Value> {
        SmallVector<Value> next;
        for (int64_t lane = 0; lane < lanes; ++lane) {
          Value e = cpu.addIndex(first, lane);
          Value qe = cpu.splatElement(resultType, queryRow, e);
          next.push_back(vector::FMAOp::create(
              cpu.b, cpu.loc, cpu.row(matrix, e), qe, acc[lane]));
        }
        return next;
      });
  Value total = loop.getResult(0);
  for (int64_t lane = 1; lane < lanes; ++lane)
    total = cpu.add(total, loop.getResult(lane));
  return total;
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

/// y[e] = sum_m lhs[e, m] * rhs(e)[m] for the K rows of `lhs`; `rhsChunk(e,
/// c)` gives lanes [c G, (c + 1) G) of the row's other factor.
template <typename Fn>
static Value rowSums(ScanLowering &cpu, Value lhs, Fn rhsChunk) {
  auto type = cast<MemRefType>(lhs.getType());
  int64_t rows = type.getDimSize(0), cols = type.getDimSize(1);
  int64_t group = reductionGroup(type);
  Type element = type.getElementType();
  auto resultType = VectorType::get({rows}, element);
  auto chunkType = VectorType::get({group}, element);
  // Each group's sums go to a stack row at a run-time offset; the whole row
  // is read back once at the end.
  Value sums = cpu.scratchRow(element, rows);
  cpu.forRowGroups(lhs, group, {}, [&](Value first, ValueRange) {
    SmallVector<Value> partials;
    for (int64_t lane = 0; lane < group; ++lane) {
      Value e = cpu.addIndex(first, lane);
      Value acc;
      for (int64_t c = 0; c < cols / group; ++c) {
        Value chunk = vector::LoadOp::create(cpu.b, cpu.loc, chunkType, lhs,
                                             ValueRange{e, cpu.index(c * group)});
        acc = acc ? vector::FMAOp::create(cpu.b, cpu.loc, chunk,
                                          rhsChunk(e, c), acc)
                        .getResult()
                  : cpu.mul(chunk, rhsChunk(e, c));
      }
      partials.push_back(acc);
    }
    vector::StoreOp::create(cpu.b, cpu.loc, sumEach(cpu, partials), sums,
                            ValueRange{first});
    return SmallVector<Value>{};
  });
  return vector::LoadOp::create(cpu.b, cpu.loc, resultType, sums,
                                ValueRange{cpu.index(0)});
}

/// y[e] = sum(product(e)) for the K rows of `matrix`, one horizontal
/// reduction per row: the fallback of rowSums for shapes it does not take.
template <typename Fn>
static Value sumEachRow(ScanLowering &cpu, Value matrix, Fn product) {
  auto type = cast<MemRefType>(matrix.getType());
  int64_t rows = type.getDimSize(0);
  Value sums = cpu.scratchRow(type.getElementType(), rows);
  cpu.forRows(matrix, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    memref::StoreOp::create(cpu.b, cpu.loc, cpu.sum(product(e)), sums,
                            ValueRange{e});
    return {};
  });
  return vector::LoadOp::create(
      cpu.b, cpu.loc, VectorType::get({rows}, type.getElementType()), sums,
      ValueRange{cpu.index(0)});
}

/// Lanes [c G, (c + 1) G) of a vector, for c = 0 .. N / G - 1.
static SmallVector<Value> chunksOf(ScanLowering &cpu, Value vector,
                                   int64_t group) {
  int64_t size = cast<VectorType>(vector.getType()).getDimSize(0);
  SmallVector<Value> chunks;
  for (int64_t c = 0; c < size / group; ++c)
    chunks.push_back(vector::ExtractStridedSliceOp::create(
        cpu.b, cpu.loc, vector, ArrayRef<int64_t>{c * group},
        ArrayRef<int64_t>{group}, ArrayRef<int64_t>{1}));
  return chunks;
}

static Value readTransposedMatrix(ScanLowering &cpu, Value matrix, Value x) {
  // y[e] = sum_m W[e, m] x[m]
  auto type = cast<MemRefType>(matrix.getType());
  if (int64_t group = reductionGroup(type)) {
    SmallVector<Value> xChunks = chunksOf(cpu, x, group);
    return rowSums(cpu, matrix,
                   [&](Value, int64_t c) { return xChunks[c]; });
  }
  return sumEachRow(cpu, matrix, [&](Value e) {
    return cpu.mul(cpu.row(matrix, e), x);
  });
}

static void addOuterInPlace(ScanLowering &cpu, Value matrix, Value key,
                            Value value) {
  // W[e, :] += k[e] v
  Value keyRow = cpu.spill(key);
  cpu.forRows(matrix, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    Value ke = cpu.splatElement(value.getType(), keyRow, e);
    Value updated =
        vector::FMAOp::create(cpu.b, cpu.loc, ke, value, cpu.row(matrix, e));
    vector::StoreOp::create(cpu.b, cpu.loc, updated, matrix,
                            ValueRange{e, cpu.index(0)});
    return {};
  });
}

static LogicalResult lowerRead(ReadOp o, ScanLowering &cpu) {
  cpu.set(o, readMatrix(cpu, cpu.in(o.getWeight()), cpu.in(o.getQuery())));
  return success();
}

static LogicalResult lowerReadTransposed(ReadTransposedOp o,
                                         ScanLowering &cpu) {
  cpu.set(o, readTransposedMatrix(cpu, cpu.in(o.getWeight()),
                                  cpu.in(o.getValue())));
  return success();
}

static LogicalResult lowerScaleRows(ScaleRowsOp o, ScanLowering &cpu) {
  // W[e, :] *= a[e]
  Value target = cpu.writableCopy(o.getWeight(), o);
  Value factors = cpu.spill(cpu.in(o.getFactors()));
  cpu.forRows(target, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    Value row_ = cpu.row(target, e);
    Value scaled =
        cpu.mul(row_, cpu.splatElement(row_.getType(), factors, e));
    vector::StoreOp::create(cpu.b, cpu.loc, scaled, target,
                            ValueRange{e, cpu.index(0)});
    return {};
  });
  cpu.set(o, target);
  return success();
}

static LogicalResult lowerRowDot(RowDotOp o, ScanLowering &cpu) {
  // y[e] = A[e, :] . B[e, :]
  Value lhs = cpu.in(o.getLhs()), rhs = cpu.in(o.getRhs());
  auto type = cast<MemRefType>(lhs.getType());
  if (int64_t group = reductionGroup(type)) {
    auto chunkType = VectorType::get({group}, type.getElementType());
    cpu.set(o, rowSums(cpu, lhs, [&](Value e, int64_t c) -> Value {
              return vector::LoadOp::create(
                  cpu.b, cpu.loc, chunkType, rhs,
                  ValueRange{e, cpu.index(c * group)});
            }));
    return success();
  }
  cpu.set(o, sumEachRow(cpu, lhs, [&](Value e) {
            return cpu.mul(cpu.row(lhs, e), cpu.row(rhs, e));
          }));
  return success();
}

static LogicalResult lowerWriteSum(WriteSumOp o, ScanLowering &cpu) {
  Value target = cpu.writableCopy(o.getWeight(), o);
  addOuterInPlace(cpu, target, cpu.in(o.getKey()), cpu.in(o.getValue()));
  cpu.set(o, target);
  return success();
}

static LogicalResult lowerWriteDelta(WriteDeltaOp o, ScanLowering &cpu) {
  Value key = cpu.in(o.getKey()), value = cpu.in(o.getValue());
  Value retrieved = readMatrix(cpu, cpu.in(o.getWeight()), key);
  Value delta = cpu.mul(cpu.sub(value, retrieved),
                        cpu.splat(value.getType(), cpu.in(o.getBeta())));
  Value target = cpu.writableCopy(o.getWeight(), o);
  addOuterInPlace(cpu, target, key, delta);
  cpu.set(o.getNewWeight(), target);
  cpu.set(o.getRetrieved(), retrieved);
  return success();
}

void mlir::fwp::cpu::populateFastWeightPatterns(CpuPatternSet &patterns) {
  patterns.add<ReadOp>(lowerRead);
  patterns.add<ReadTransposedOp>(lowerReadTransposed);
  patterns.add<ScaleRowsOp>(lowerScaleRows);
  patterns.add<RowDotOp>(lowerRowDot);
  patterns.add<WriteSumOp>(lowerWriteSum);
  patterns.add<WriteDeltaOp>(lowerWriteDelta);
}
