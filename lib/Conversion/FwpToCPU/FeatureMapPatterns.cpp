//===- FeatureMapPatterns.cpp - Feature maps on the CPU -------------------===//
//
// The feature maps and normalisations of a layer (elu+1, sum_norm,
// softmax, DPFP, layer norm) and their gradients, on vectors in
// registers.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

/// DPFP's rectified input r = [relu(x), relu(-x)].
static Value dpfpRectified(ScanLowering &cpu, Value x) {
  auto type = cast<VectorType>(x.getType());
  Value zero = cpu.constant(type, 0.0);
  Value pos = arith::MaximumFOp::create(cpu.b, cpu.loc, x, zero);
  Value neg = arith::MaximumFOp::create(
      cpu.b, cpu.loc, arith::NegFOp::create(cpu.b, cpu.loc, x), zero);
  SmallVector<int64_t> concat;
  for (int64_t i = 0; i < 2 * type.getDimSize(0); ++i)
    concat.push_back(i);
  return vector::ShuffleOp::create(cpu.b, cpu.loc, pos, neg, concat);
}

/// Layer-norm statistics: returns ((x - mean) * rstd, rstd).
static std::pair<Value, Value> normalize(ScanLowering &cpu, Value x,
                                         double eps) {
  Type type = x.getType();
  Type element = getElementTypeOrSelf(type);
  Value count = cpu.constant(element, cast<VectorType>(type).getDimSize(0));
  Value mean = cpu.div(cpu.sum(x), count);
  Value centered = cpu.sub(x, cpu.splat(type, mean));
  Value var = cpu.div(cpu.dot(centered, centered), count);
  Value rstd = math::RsqrtOp::create(cpu.b, cpu.loc,
                                     cpu.add(var, cpu.constant(element, eps)));
  return {cpu.mul(centered, cpu.splat(type, rstd)), rstd};
}

static LogicalResult lowerEluPlusOne(EluPlusOneOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX());
  Value positive =
      arith::CmpFOp::create(cpu.b, cpu.loc, arith::CmpFPredicate::OGT, x,
                            cpu.constant(x.getType(), 0.0));
  cpu.set(o, arith::SelectOp::create(cpu.b, cpu.loc, positive,
                                     cpu.add(x, cpu.constant(x.getType(), 1.0)),
                                     cpu.exp(x)));
  return success();
}

static LogicalResult lowerSumNorm(SumNormOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX());
  Value total =
      cpu.add(cpu.sum(x), cpu.constant(getElementTypeOrSelf(x.getType()),
                                       o.getEps().convertToDouble()));
  cpu.set(o, cpu.div(x, cpu.splat(x.getType(), total)));
  return success();
}

static LogicalResult lowerSoftmax(SoftmaxOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX());
  Value max = vector::ReductionOp::create(cpu.b, cpu.loc,
                                          vector::CombiningKind::MAXIMUMF, x);
  Value e = cpu.exp(cpu.sub(x, cpu.splat(x.getType(), max)));
  cpu.set(o, cpu.div(e, cpu.splat(x.getType(), cpu.sum(e))));
  return success();
}

static LogicalResult lowerDpfp(DpfpOp o, ScanLowering &cpu) {
  // r = [relu(x), relu(-x)]; out_s[i] = r[i] r[(i + s) mod 2n].
  Value x = cpu.in(o.getX());
  auto type = cast<VectorType>(x.getType());
  int64_t n2 = 2 * type.getDimSize(0);
  Value r = dpfpRectified(cpu, x);
  auto resultType = cast<VectorType>(o.getResult().getType());
  Value result = cpu.constant(resultType, 0.0);
  for (int64_t s = 1, nu = o.getNu(); s <= nu; ++s) {
    SmallVector<int64_t> rolled;
    for (int64_t i = 0; i < n2; ++i)
      rolled.push_back((i + s) % n2);
    Value shifted = vector::ShuffleOp::create(cpu.b, cpu.loc, r, r, rolled);
    result = vector::InsertStridedSliceOp::create(
        cpu.b, cpu.loc, cpu.mul(r, shifted), result,
        ArrayRef<int64_t>{(s - 1) * n2}, ArrayRef<int64_t>{1});
  }
  cpu.set(o, result);
  return success();
}

static LogicalResult lowerDpfpGrad(DpfpGradOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX()), g = cpu.in(o.getGrad());
  auto type = cast<VectorType>(x.getType());
  int64_t n = type.getDimSize(0), n2 = 2 * n;
  auto rType = VectorType::get({n2}, type.getElementType());
  Value zero = cpu.constant(type, 0.0);
  Value r = dpfpRectified(cpu, x);
  Value dr = cpu.constant(rType, 0.0);
  for (int64_t s = 1, nu = o.getNu(); s <= nu; ++s) {
    SmallVector<int64_t> forward, backward;
    for (int64_t i = 0; i < n2; ++i) {
      forward.push_back((i + s) % n2);
      backward.push_back((i - s + n2) % n2);
    }
    Value gs = vector::ExtractStridedSliceOp::create(
        cpu.b, cpu.loc, g, ArrayRef<int64_t>{(s - 1) * n2},
        ArrayRef<int64_t>{n2}, ArrayRef<int64_t>{1});
    // d r[i] += g_s[i] r[i+s];  d r[i+s] += g_s[i] r[i].
    Value shifted = vector::ShuffleOp::create(cpu.b, cpu.loc, r, r, forward);
    dr = cpu.add(dr, cpu.mul(gs, shifted));
    Value gr = cpu.mul(gs, r);
    dr = cpu.add(dr,
                 vector::ShuffleOp::create(cpu.b, cpu.loc, gr, gr, backward));
  }
  Value drPos = vector::ExtractStridedSliceOp::create(
      cpu.b, cpu.loc, dr, ArrayRef<int64_t>{0}, ArrayRef<int64_t>{n},
      ArrayRef<int64_t>{1});
  Value drNeg = vector::ExtractStridedSliceOp::create(
      cpu.b, cpu.loc, dr, ArrayRef<int64_t>{n}, ArrayRef<int64_t>{n},
      ArrayRef<int64_t>{1});
  Value isPos =
      arith::CmpFOp::create(cpu.b, cpu.loc, arith::CmpFPredicate::OGT, x, zero);
  Value isNeg =
      arith::CmpFOp::create(cpu.b, cpu.loc, arith::CmpFPredicate::OLT, x, zero);
  Value dx =
      cpu.sub(arith::SelectOp::create(cpu.b, cpu.loc, isPos, drPos, zero),
              arith::SelectOp::create(cpu.b, cpu.loc, isNeg, drNeg, zero));
  cpu.set(o, dx);
  return success();
}

static LogicalResult lowerLayerNorm(LayerNormOp o, ScanLowering &cpu) {
  auto [normed, rstd] =
      normalize(cpu, cpu.in(o.getX()), o.getEps().convertToDouble());
  cpu.set(o,
          cpu.add(cpu.mul(normed, cpu.in(o.getWeight())), cpu.in(o.getBias())));
  return success();
}

static LogicalResult lowerLayerNormGrad(LayerNormGradOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX()), w = cpu.in(o.getWeight()),
        g = cpu.in(o.getGrad());
  Type type = x.getType();
  int64_t n = cast<VectorType>(type).getDimSize(0);
  Type element = getElementTypeOrSelf(type);
  Value count = cpu.constant(element, n);
  auto [normed, rstd] = normalize(cpu, x, o.getEps().convertToDouble());
  Value dNormed = cpu.mul(g, w);
  Value meanD = cpu.div(cpu.sum(dNormed), count);
  Value meanDN = cpu.div(cpu.dot(dNormed, normed), count);
  Value dx = cpu.mul(cpu.splat(type, rstd),
                     cpu.sub(cpu.sub(dNormed, cpu.splat(type, meanD)),
                             cpu.mul(normed, cpu.splat(type, meanDN))));
  cpu.set(o.getGradX(), dx);
  cpu.set(o.getGradWeight(), cpu.mul(g, normed));
  cpu.set(o.getGradBias(), g);
  return success();
}

static LogicalResult lowerEluPlusOneGrad(EluPlusOneGradOp o,
                                         ScanLowering &cpu) {
  // The slope is min(y, 1): 1 where x > 0 (y = x + 1), e^x = y elsewhere.
  Value y = cpu.in(o.getY());
  Value slope = arith::MinimumFOp::create(cpu.b, cpu.loc, y,
                                          cpu.constant(y.getType(), 1.0));
  cpu.set(o, cpu.mul(cpu.in(o.getGrad()), slope));
  return success();
}

static LogicalResult lowerSoftmaxGrad(SoftmaxGradOp o, ScanLowering &cpu) {
  Value y = cpu.in(o.getX()), g = cpu.in(o.getGrad());
  cpu.set(o, cpu.mul(y, cpu.sub(g, cpu.splat(y.getType(), cpu.dot(y, g)))));
  return success();
}

static LogicalResult lowerSumNormGrad(SumNormGradOp o, ScanLowering &cpu) {
  Value x = cpu.in(o.getX()), g = cpu.in(o.getGrad());
  Type element = getElementTypeOrSelf(x.getType());
  Value total =
      cpu.add(cpu.sum(x), cpu.constant(element, o.getEps().convertToDouble()));
  Value correction = cpu.div(cpu.dot(g, x), total);
  cpu.set(o, cpu.div(cpu.sub(g, cpu.splat(x.getType(), correction)),
                     cpu.splat(x.getType(), total)));
  return success();
}

void mlir::fwp::cpu::populateFeatureMapPatterns(CpuPatternSet &patterns) {
  patterns.add<EluPlusOneOp>(lowerEluPlusOne);
  patterns.add<SumNormOp>(lowerSumNorm);
  patterns.add<SoftmaxOp>(lowerSoftmax);
  patterns.add<DpfpOp>(lowerDpfp);
  patterns.add<DpfpGradOp>(lowerDpfpGrad);
  patterns.add<LayerNormOp>(lowerLayerNorm);
  patterns.add<LayerNormGradOp>(lowerLayerNormGrad);
  patterns.add<EluPlusOneGradOp>(lowerEluPlusOneGrad);
  patterns.add<SoftmaxGradOp>(lowerSoftmaxGrad);
  patterns.add<SumNormGradOp>(lowerSumNormGrad);
}
