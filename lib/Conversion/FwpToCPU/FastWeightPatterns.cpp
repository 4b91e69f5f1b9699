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

static Value readMatrix(ScanLowering &cpu, Value matrix, Value query) {
  // y[m] = sum_e W[e, m] q[e]
  auto type = cast<MemRefType>(matrix.getType());
  auto resultType =
      VectorType::get({type.getDimSize(1)}, type.getElementType());
  Value zero = cpu.constant(resultType, 0.0);
  return cpu
      .forRows(matrix, zero,
               [&](Value e, ValueRange acc) -> SmallVector<Value> {
                 Value qe = cpu.splat(resultType, cpu.extract(query, e));
                 return {vector::FMAOp::create(cpu.b, cpu.loc,
                                               cpu.row(matrix, e), qe, acc[0])};
               })
      .getResult(0);
}

static Value readTransposedMatrix(ScanLowering &cpu, Value matrix, Value x) {
  // y[e] = sum_m W[e, m] x[m]
  auto type = cast<MemRefType>(matrix.getType());
  auto resultType =
      VectorType::get({type.getDimSize(0)}, type.getElementType());
  Value zero = cpu.constant(resultType, 0.0);
  return cpu
      .forRows(matrix, zero,
               [&](Value e, ValueRange acc) -> SmallVector<Value> {
                 Value value = cpu.dot(cpu.row(matrix, e), x);
                 return {vector::InsertOp::create(cpu.b, cpu.loc, value, acc[0],
                                                  OpFoldResult(e))};
               })
      .getResult(0);
}

static void addOuterInPlace(ScanLowering &cpu, Value matrix, Value key,
                            Value value) {
  // W[e, :] += k[e] v
  cpu.forRows(matrix, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    Value ke = cpu.splat(value.getType(), cpu.extract(key, e));
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
  Value factors = cpu.in(o.getFactors());
  cpu.forRows(target, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    Value row_ = cpu.row(target, e);
    Value scaled =
        cpu.mul(row_, cpu.splat(row_.getType(), cpu.extract(factors, e)));
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
  Value zero = cpu.constant(o.getType(), 0.0);
  cpu.set(o, cpu.forRows(lhs, zero,
                         [&](Value e, ValueRange acc) -> SmallVector<Value> {
                           Value value =
                               cpu.dot(cpu.row(lhs, e), cpu.row(rhs, e));
                           return {vector::InsertOp::create(
                               cpu.b, cpu.loc, value, acc[0], OpFoldResult(e))};
                         })
                 .getResult(0));
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
