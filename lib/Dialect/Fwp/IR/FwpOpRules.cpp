//===- FwpOpRules.cpp - The rules each fwp op carries ---------------------===//
//
// Per op, next to each other: its reverse-mode adjoint (AdjointOpInterface),
// for ops that update a fast weight what the backward needs to rebuild the
// state (FastWeightUpdateOpInterface), and for composite ops their
// decomposition into the core (DecomposableOpInterface). fwp-differentiate
// and fwp-decompose work through these interfaces only.
//
// Notation: g is the gradient reaching the op's (first) result, m(x) the
// recomputed value of x in the backward body.
//
//===----------------------------------------------------------------------===//

#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include <cmath>

using namespace mlir;
using namespace mlir::fwp;

#include "fwp/Dialect/Fwp/IR/FwpInterfaces.cpp.inc"

namespace {
/// Shorthands for an adjoint rule of `op`.
struct Rule {
  AdjointEmitter &a;
  Location loc;
  OpBuilder &b() { return a.builder(); }
  Value m(Value v) { return a.recomputed(v); }
};
} // namespace

//===----------------------------------------------------------------------===//
// Feature maps
//===----------------------------------------------------------------------===//

LogicalResult EluPlusOneOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), EluPlusOneGradOp::create(r.b(), r.loc,
                                                r.m(getResult()),
                                                a.adjointOf(getResult())));
  return success();
}

LogicalResult SumNormOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), SumNormGradOp::create(r.b(), r.loc, r.m(getX()),
                                             a.adjointOf(getResult()),
                                             getEpsAttr()));
  return success();
}

LogicalResult SoftmaxOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), SoftmaxGradOp::create(r.b(), r.loc, r.m(getResult()),
                                             a.adjointOf(getResult())));
  return success();
}

LogicalResult DpfpOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), DpfpGradOp::create(r.b(), r.loc, r.m(getX()),
                                          a.adjointOf(getResult()),
                                          getNuAttr()));
  return success();
}

//===----------------------------------------------------------------------===//
// Elementwise and dense ops
//===----------------------------------------------------------------------===//

LogicalResult SigmoidOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), SigmoidGradOp::create(r.b(), r.loc, r.m(getResult()),
                                             a.adjointOf(getResult())));
  return success();
}

LogicalResult TanhOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), TanhGradOp::create(r.b(), r.loc, r.m(getResult()),
                                          a.adjointOf(getResult())));
  return success();
}

LogicalResult NegOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  a.accumulate(getX(), NegOp::create(r.b(), r.loc, a.adjointOf(getResult())));
  return success();
}

LogicalResult SqrtOp::buildAdjoint(AdjointEmitter &a) {
  // y = sqrt(x): dx = g * 0.5 / y.
  Rule r{a, getLoc()};
  Value half = ConstantOp::create(r.b(), r.loc, getType(), r.b().getF64FloatAttr(0.5));
  Value scaled = MulOp::create(r.b(), r.loc, a.adjointOf(getResult()), half);
  a.accumulate(getX(), DivOp::create(r.b(), r.loc, scaled, r.m(getResult())));
  return success();
}

LogicalResult AddOp::buildAdjoint(AdjointEmitter &a) {
  Value g = a.adjointOf(getResult());
  a.accumulate(getLhs(), g);
  a.accumulate(getRhs(), g);
  return success();
}

LogicalResult SubOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  a.accumulate(getLhs(), g);
  a.accumulate(getRhs(), NegOp::create(r.b(), r.loc, g));
  return success();
}

LogicalResult MulOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  a.accumulate(getLhs(), MulOp::create(r.b(), r.loc, g, r.m(getRhs())));
  a.accumulate(getRhs(), MulOp::create(r.b(), r.loc, g, r.m(getLhs())));
  return success();
}

LogicalResult DivOp::buildAdjoint(AdjointEmitter &a) {
  // z = x / y: dx = g / y, dy = -g z / y.
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  Value y = r.m(getRhs());
  a.accumulate(getLhs(), DivOp::create(r.b(), r.loc, g, y));
  Value zOverY = DivOp::create(r.b(), r.loc, r.m(getResult()), y);
  a.accumulate(getRhs(), NegOp::create(r.b(), r.loc,
                                       MulOp::create(r.b(), r.loc, g, zOverY)));
  return success();
}

LogicalResult ScaleOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  a.accumulate(getX(), ScaleOp::create(r.b(), r.loc, g, r.m(getFactor())));
  a.accumulate(getFactor(), DotOp::create(r.b(), r.loc, g, r.m(getX())));
  return success();
}

LogicalResult DotOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  a.accumulate(getLhs(), ScaleOp::create(r.b(), r.loc, r.m(getRhs()), g));
  a.accumulate(getRhs(), ScaleOp::create(r.b(), r.loc, r.m(getLhs()), g));
  return success();
}

LogicalResult LayerNormOp::buildAdjoint(AdjointEmitter &a) {
  Rule r{a, getLoc()};
  auto grads = LayerNormGradOp::create(r.b(), r.loc, r.m(getX()),
                                       r.m(getWeight()),
                                       a.adjointOf(getResult()), getEpsAttr());
  a.accumulate(getX(), grads.getGradX());
  a.accumulate(getWeight(), grads.getGradWeight());
  a.accumulate(getBias(), grads.getGradBias());
  return success();
}

LogicalResult ConstantOp::buildAdjoint(AdjointEmitter &) { return success(); }

//===----------------------------------------------------------------------===//
// Reads
//===----------------------------------------------------------------------===//

LogicalResult ReadOp::buildAdjoint(AdjointEmitter &a) {
  // y = W^T q: dq = W g, dW += q (x) g; E(W) += q (.) dq.
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  Value query = r.m(getQuery());
  bool energy = a.tracksEnergy(getWeight());
  Value dq = energy ? a.precomputedRead(getOperation())
                    : ReadTransposedOp::create(r.b(), r.loc, getQuery().getType(),
                                               r.m(getWeight()), g)
                          .getResult();
  a.accumulate(getQuery(), dq);
  a.accumulateOuter(getWeight(), query, g);
  if (energy)
    a.accumulateEnergy(getWeight(), MulOp::create(r.b(), r.loc, query, dq));
  return success();
}

LogicalResult ReadTransposedOp::buildAdjoint(AdjointEmitter &a) {
  // y = W x: dx = W^T g, dW += g (x) x.
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  a.accumulate(getValue(), ReadOp::create(r.b(), r.loc, getValue().getType(),
                                          r.m(getWeight()), g));
  a.accumulateOuter(getWeight(), g, r.m(getValue()));
  return success();
}

LogicalResult RowDotOp::buildAdjoint(AdjointEmitter &a) {
  // y[e] = sum_m A[e, m] B[e, m]: dA = diag(g) B, dB = diag(g) A.
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  a.accumulate(getLhs(), ScaleRowsOp::create(r.b(), r.loc, r.m(getRhs()), g));
  a.accumulate(getRhs(), ScaleRowsOp::create(r.b(), r.loc, r.m(getLhs()), g));
  return success();
}

//===----------------------------------------------------------------------===//
// Updates of a fast weight
//===----------------------------------------------------------------------===//

LogicalResult WriteSumOp::buildAdjoint(AdjointEmitter &a) {
  // W' = W + k (x) v: dk = G v, dv = G^T k, dW = G; E(W) = E(W') - k (.) dk.
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  Value key = r.m(getKey());
  Value dk = ReadTransposedOp::create(r.b(), r.loc, getKey().getType(), g,
                                      r.m(getValue()));
  a.accumulate(getKey(), dk);
  a.accumulate(getValue(), ReadOp::create(r.b(), r.loc, getValue().getType(), g,
                                          key));
  a.accumulate(getWeight(), g);
  if (a.tracksEnergy(getWeight())) {
    Value written = MulOp::create(r.b(), r.loc, key, dk);
    Value energy = a.energyOf(getResult());
    a.accumulateEnergy(getWeight(),
                       energy ? SubOp::create(r.b(), r.loc, energy, written).getResult()
                              : NegOp::create(r.b(), r.loc, written).getResult());
  }
  return success();
}

Value WriteSumOp::getUpdatedWeight() { return getWeight(); }
Value WriteSumOp::getUpdateResult() { return getResult(); }
bool WriteSumOp::isInvertible() { return true; }
SmallVector<Value> WriteSumOp::buildInverseTape(OpBuilder &) {
  return {getKey(), getValue()};
}
Value WriteSumOp::buildInverse(OpBuilder &builder, Value newWeight,
                               ValueRange tape) {
  // W = W' - k (x) v.
  return WriteSumOp::create(builder, getLoc(), newWeight, tape[0],
                            NegOp::create(builder, getLoc(), tape[1]));
}
void WriteSumOp::recomputeOtherResults(OpBuilder &, IRMapping &, ValueRange) {}
std::optional<LinearUpdate> WriteSumOp::getLinearUpdate() {
  return LinearUpdate{{}, getKey(), getValue(), {}, {}};
}

LogicalResult WriteDeltaOp::buildAdjoint(AdjointEmitter &a) {
  // W' = W + k (x) u, u = beta (v - vbar), vbar = W^T k.
  Rule r{a, getLoc()};
  OpBuilder &b = r.b();
  Location loc = r.loc;
  Value gW = a.adjointOf(getNewWeight());
  Value gRetrieved = a.adjointOf(getRetrieved());
  Value key = r.m(getKey()), beta = r.m(getBeta());
  // v - vbar: in the backward of an inverted write, vbar is recomputed as
  // v - r from the tape's residual r (recomputeOtherResults); r itself is
  // the forward's value.
  Value diff;
  if (auto recomputed = r.m(getRetrieved()).getDefiningOp<SubOp>();
      recomputed && recomputed.getLhs() == r.m(getValue()))
    diff = recomputed.getRhs();
  else
    diff = SubOp::create(b, loc, r.m(getValue()), r.m(getRetrieved()));
  if (a.tracksEnergy(getWeight()))
    return buildEnergyAdjoint(a, gW, gRetrieved, diff);
  Value du, dv, dk, previousAdjoint;
  if (gW && !gRetrieved) {
    // G - beta k (x) (G^T k) is itself a delta-rule write of G (value 0)
    // whose retrieval is du: the adjoint's update is then linear with the
    // forward's coefficients, so the backward scan has the chunkwise form.
    Value zeros = ConstantOp::create(b, loc, getValue().getType(),
                                     b.getF64FloatAttr(0.0));
    auto adjointWrite = WriteDeltaOp::create(b, loc, gW, key, zeros, beta);
    previousAdjoint = adjointWrite.getNewWeight();
    du = adjointWrite.getRetrieved();
  } else if (gW) {
    du = ReadOp::create(b, loc, getValue().getType(), gW, key);
  }
  if (gW) {
    a.accumulate(getBeta(), DotOp::create(b, loc, du, diff));
    dv = ScaleOp::create(b, loc, du, beta);
    a.accumulate(getValue(), dv);
    Value u = ScaleOp::create(b, loc, diff, beta);
    dk = ReadTransposedOp::create(b, loc, getKey().getType(), gW, u);
  }
  // Total gradient reaching vbar: its own uses, minus beta * du.
  Value dRetrieved = gRetrieved;
  if (dv)
    dRetrieved = dRetrieved
                     ? SubOp::create(b, loc, dRetrieved, dv).getResult()
                     : NegOp::create(b, loc, dv).getResult();
  if (dRetrieved) {
    Value viaRetrieved = ReadTransposedOp::create(
        b, loc, getKey().getType(), r.m(getWeight()), dRetrieved);
    dk = dk ? AddOp::create(b, loc, dk, viaRetrieved).getResult() : viaRetrieved;
  }
  a.accumulate(getKey(), dk);
  if (previousAdjoint) {
    a.accumulate(getWeight(), previousAdjoint);
    return success();
  }
  if (gW)
    a.accumulate(getWeight(), gW);
  if (dRetrieved)
    a.accumulateOuter(getWeight(), key, dRetrieved);
  return success();
}

/// The energy form (a checkpointed weight with uniform decays; the backward
/// has no W): with G = adj(W'), d = adj(vbar) in all,
///   adj(W) = G + k (x) d = [G - beta k (x) (G^T k)] + k (x) adj(vbar)
///   dk = G u + W d,  E(W) = E(W') - k (.) (G u) + k (.) (W d).
/// `W d` is deferred to the forward-running scan after the backward; the
/// sum of its energy term is vbar . d (what a uniform decay's gradient
/// sums), spread evenly over the rows.
LogicalResult WriteDeltaOp::buildEnergyAdjoint(AdjointEmitter &a, Value gW,
                                               Value gRetrieved, Value diff) {
  Rule r{a, getLoc()};
  OpBuilder &b = r.b();
  Location loc = r.loc;
  Value key = r.m(getKey()), beta = r.m(getBeta());
  Value d = gRetrieved, gu;
  if (gW) {
    Value zeros = ConstantOp::create(b, loc, getValue().getType(),
                                     b.getF64FloatAttr(0.0));
    auto adjointWrite = WriteDeltaOp::create(b, loc, gW, key, zeros, beta);
    Value du = adjointWrite.getRetrieved(); // G^T k
    a.accumulate(getBeta(), DotOp::create(b, loc, du, diff));
    Value dv = ScaleOp::create(b, loc, du, beta);
    a.accumulate(getValue(), dv);
    gu = ReadTransposedOp::create(b, loc, getKey().getType(), gW,
                                  ScaleOp::create(b, loc, diff, beta));
    a.accumulate(getKey(), gu);
    a.accumulate(getWeight(), adjointWrite.getNewWeight());
    d = d ? SubOp::create(b, loc, d, dv).getResult()
          : NegOp::create(b, loc, dv).getResult();
  }
  if (gRetrieved)
    a.accumulateOuter(getWeight(), key, gRetrieved);
  if (d && !a.deferProduct(getOperation(), d))
    return emitOpError() << "has a tracked weight whose product with the "
                            "adjoint cannot be deferred";
  Value energy = a.energyOf(getNewWeight());
  if (gu) {
    Value written = MulOp::create(b, loc, key, gu);
    energy = energy ? SubOp::create(b, loc, energy, written).getResult()
                    : NegOp::create(b, loc, written).getResult();
  }
  if (d) {
    auto rows = cast<VectorType>(getKey().getType());
    Value share = ConstantOp::create(b, loc, rows,
                                     b.getF64FloatAttr(1.0 / rows.getNumElements()));
    Value retrieved = DotOp::create(b, loc, r.m(getRetrieved()), d);
    Value spread = ScaleOp::create(b, loc, share, retrieved);
    energy = energy ? AddOp::create(b, loc, energy, spread).getResult() : spread;
  }
  a.accumulateEnergy(getWeight(), energy);
  return success();
}

Value WriteDeltaOp::getUpdatedWeight() { return getWeight(); }
Value WriteDeltaOp::getUpdateResult() { return getNewWeight(); }
bool WriteDeltaOp::isInvertible() { return true; }
SmallVector<Value> WriteDeltaOp::buildInverseTape(OpBuilder &builder) {
  // The key, the residual v - vbar and the rate: the backward gets the
  // written row beta (v - vbar) from them as the forward computed it, and
  // vbar without reading the rebuilt weight again.
  Value diff = SubOp::create(builder, getLoc(), getValue(), getRetrieved());
  return {getKey(), diff, getBeta()};
}
Value WriteDeltaOp::buildInverse(OpBuilder &builder, Value newWeight,
                                 ValueRange tape) {
  // W = W' - k (x) delta, delta = beta (v - vbar).
  Value delta = ScaleOp::create(builder, getLoc(), tape[1], tape[2]);
  return WriteSumOp::create(builder, getLoc(), newWeight, tape[0],
                            NegOp::create(builder, getLoc(), delta));
}
std::optional<LinearUpdate> WriteDeltaOp::getLinearUpdate() {
  return LinearUpdate{{}, getKey(), getValue(), getBeta(), getRetrieved()};
}
void WriteDeltaOp::recomputeOtherResults(OpBuilder &builder, IRMapping &mapping,
                                         ValueRange tape) {
  // vbar = v - (v - vbar), from the tape's residual.
  Value retrieved =
      SubOp::create(builder, getLoc(), mapping.lookup(getValue()), tape[1]);
  mapping.map(getRetrieved(), retrieved);
}

LogicalResult ScaleRowsOp::buildAdjoint(AdjointEmitter &a) {
  // W' = diag(a) W: dW = diag(a) G, da = row_dot(G, W).
  Rule r{a, getLoc()};
  Value g = a.adjointOf(getResult());
  Value factors = r.m(getFactors());
  a.accumulate(getWeight(), ScaleRowsOp::create(r.b(), r.loc, g, factors));
  if (!a.tracksEnergy(getWeight())) {
    a.accumulate(getFactors(),
                 RowDotOp::create(r.b(), r.loc, getFactors().getType(), g,
                                  r.m(getWeight())));
    return success();
  }
  // Energy form: rowsum(G (.) W') = a (.) da, and E(W) = E(W') since
  // (a (.) G) (.) W = G (.) W'. For a = sigmoid(x) the gradient goes to x as
  // E (1 - a), without the quotient E / a (0 / 0 where a underflows).
  Value energy = a.energyOf(getResult());
  if (!energy)
    return success();
  a.accumulateEnergy(getWeight(), energy);
  if (auto sigmoid = getFactors().getDefiningOp<SigmoidOp>()) {
    Value one = ConstantOp::create(r.b(), r.loc, factors.getType(),
                                   r.b().getF64FloatAttr(1.0));
    a.accumulate(sigmoid.getX(),
                 MulOp::create(r.b(), r.loc, energy,
                               SubOp::create(r.b(), r.loc, one, factors)));
    return success();
  }
  a.accumulate(getFactors(), DivOp::create(r.b(), r.loc, energy, factors));
  return success();
}

Value ScaleRowsOp::getUpdatedWeight() { return getWeight(); }
Value ScaleRowsOp::getUpdateResult() { return getResult(); }
/// Undoing it divides by the factors: the error of W_t grows like
/// prod_t 1/a_t over the sequence, so the backward never inverts it.
bool ScaleRowsOp::isInvertible() { return false; }
std::optional<LinearUpdate> ScaleRowsOp::getLinearUpdate() {
  return LinearUpdate{getFactors(), {}, {}, {}, {}};
}

//===----------------------------------------------------------------------===//
// Composite ops
//===----------------------------------------------------------------------===//

void ScaleWeightOp::decompose(RewriterBase &rewriter) {
  // a W = diag(a 1) W.
  Location loc = getLoc();
  auto type = getWeight().getType();
  auto rowsType = VectorType::get({type.getKeyDim()}, type.getElementType());
  Value ones = ConstantOp::create(rewriter, loc, rowsType, rewriter.getF64FloatAttr(1.0));
  Value factors = ScaleOp::create(rewriter, loc, ones, getFactor());
  rewriter.replaceOpWithNewOp<ScaleRowsOp>(*this, getWeight(), factors);
}

void L2NormOp::decompose(RewriterBase &rewriter) {
  // x / sqrt(x . x + eps).
  Location loc = getLoc();
  Type element = getType().getElementType();
  Value squares = DotOp::create(rewriter, loc, getX(), getX());
  Value eps = ConstantOp::create(rewriter, loc, element, getEpsAttr());
  Value norm = SqrtOp::create(rewriter, loc, AddOp::create(rewriter, loc, squares, eps));
  Value one = ConstantOp::create(rewriter, loc, element, rewriter.getF64FloatAttr(1.0));
  Value inverse = DivOp::create(rewriter, loc, one, norm);
  rewriter.replaceOpWithNewOp<ScaleOp>(*this, getX(), inverse);
}

void ScaleConstOp::decompose(RewriterBase &rewriter) {
  // x * factor * n^size_power, the constant folded from the current type.
  Location loc = getLoc();
  double n = getType().getDimSize(0);
  double value = getFactor().convertToDouble() *
                 std::pow(n, getSizePower().convertToDouble());
  Value factor = ConstantOp::create(rewriter, loc, getType().getElementType(),
                                    rewriter.getF64FloatAttr(value));
  rewriter.replaceOpWithNewOp<ScaleOp>(*this, getX(), factor);
}
