//===- ElementwisePatterns.cpp - Elementwise ops on the CPU ---------------===//
//
// Arithmetic on scalars and vectors (and add/sub on matrices, in place when
// the old matrix is dead), constants, sigmoid, tanh, sqrt and their
// gradients.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

/// matrix[e, :] = value for every row.
static void fill(ScanLowering &cpu, Value matrix, double value) {
  auto type = cast<MemRefType>(matrix.getType());
  Value zero = cpu.constant(
      VectorType::get({type.getDimSize(1)}, type.getElementType()), value);
  cpu.forRows(matrix, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    vector::StoreOp::create(cpu.b, cpu.loc, zero, matrix,
                            ValueRange{e, cpu.index(0)});
    return {};
  });
}

static void combineInPlace(ScanLowering &cpu, Value target, Value other,
                           bool subtract) {
  cpu.forRows(target, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
    Value lhs = cpu.row(target, e), rhs = cpu.row(other, e);
    Value combined = subtract ? cpu.sub(lhs, rhs) : cpu.add(lhs, rhs);
    vector::StoreOp::create(cpu.b, cpu.loc, combined, target,
                            ValueRange{e, cpu.index(0)});
    return {};
  });
}

static LogicalResult lowerSigmoid(SigmoidOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX());
  Value one = cpu.constant(x.getType(), 1.0);
  cpu.set(o, cpu.div(one, cpu.add(one, cpu.exp(arith::NegFOp::create(
                                           cpu.b, cpu.loc, x)))));
  return success();
}

static LogicalResult lowerTanh(TanhOp o, ScanLowering &cpu) {
  cpu.set(o, math::TanhOp::create(cpu.b, cpu.loc, cpu.in(o.getX())));
  return success();
}

static LogicalResult lowerNeg(NegOp o, ScanLowering &cpu) {
  cpu.set(o, arith::NegFOp::create(cpu.b, cpu.loc, cpu.in(o.getX())));
  return success();
}

static LogicalResult lowerAddSub(Operation *binary, ScanLowering &cpu) {
  Value lhs = binary->getOperand(0), rhs = binary->getOperand(1);
  bool subtract = isa<SubOp>(binary);
  if (isa<FastWeightType>(lhs.getType())) {
    Value target = cpu.writableCopy(lhs, binary);
    combineInPlace(cpu, target, cpu.in(rhs), subtract);
    cpu.set(binary->getResult(0), target);
  } else {
    cpu.set(binary->getResult(0), subtract ? cpu.sub(cpu.in(lhs), cpu.in(rhs))
                                           : cpu.add(cpu.in(lhs), cpu.in(rhs)));
  }
  return success();
}

static LogicalResult lowerMul(MulOp o, ScanLowering &cpu) {
  cpu.set(o, cpu.mul(cpu.in(o.getLhs()), cpu.in(o.getRhs())));
  return success();
}

static LogicalResult lowerDiv(DivOp o, ScanLowering &cpu) {
  cpu.set(o, cpu.div(cpu.in(o.getLhs()), cpu.in(o.getRhs())));
  return success();
}

static LogicalResult lowerScale(ScaleOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX());
  cpu.set(o, cpu.mul(x, cpu.splat(x.getType(), cpu.in(o.getFactor()))));
  return success();
}

static LogicalResult lowerDot(DotOp o, ScanLowering &cpu) {
  cpu.set(o, cpu.dot(cpu.in(o.getLhs()), cpu.in(o.getRhs())));
  return success();
}

static LogicalResult lowerConstant(ConstantOp o, ScanLowering &cpu) {
  double value = o.getValue().convertToDouble();
  if (isa<FastWeightType>(o.getType())) {
    // A matrix constant is a scratch buffer, filled every step: a write may
    // update it in place.
    Value buffer = cpu.scratchMatrix(o.getType());
    fill(cpu, buffer, value);
    cpu.set(o, buffer);
  } else {
    cpu.set(o, cpu.constant(o.getType(), value));
  }
  return success();
}

static LogicalResult lowerSigmoidGrad(SigmoidGradOp o, ScanLowering &cpu) {
  Value y = cpu.in(o.getY());
  cpu.set(o, cpu.mul(cpu.in(o.getGrad()),
                     cpu.mul(y, cpu.sub(cpu.constant(y.getType(), 1.0), y))));
  return success();
}

static LogicalResult lowerTanhGrad(TanhGradOp o, ScanLowering &cpu) {
  Value y = cpu.in(o.getY());
  cpu.set(o, cpu.mul(cpu.in(o.getGrad()),
                     cpu.sub(cpu.constant(y.getType(), 1.0), cpu.mul(y, y))));
  return success();
}

static LogicalResult lowerSqrt(SqrtOp o, ScanLowering &cpu) {
  cpu.set(o, math::SqrtOp::create(cpu.b, cpu.loc, cpu.in(o.getX())));
  return success();
}

void mlir::fwp::cpu::populateElementwisePatterns(CpuPatternSet &patterns) {
  patterns.add<SigmoidOp>(lowerSigmoid);
  patterns.add<TanhOp>(lowerTanh);
  patterns.add<NegOp>(lowerNeg);
  patterns.add<AddOp, SubOp>(lowerAddSub);
  patterns.add<MulOp>(lowerMul);
  patterns.add<DivOp>(lowerDiv);
  patterns.add<ScaleOp>(lowerScale);
  patterns.add<DotOp>(lowerDot);
  patterns.add<ConstantOp>(lowerConstant);
  patterns.add<SigmoidGradOp>(lowerSigmoidGrad);
  patterns.add<TanhGradOp>(lowerTanhGrad);
  patterns.add<SqrtOp>(lowerSqrt);
}
