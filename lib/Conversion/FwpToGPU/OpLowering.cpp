//===- OpLowering.cpp - The GPU lowering of each op -----------------------===//
//
// One lowering per op of a scan body, on top of the layout, memory,
// barrier and warp primitives; an op without one is an error naming it.
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

Value KernelEmitter::elemOf(Value fwpValue, Value i) {
  const Lowered &l = lowered.at(fwpValue);
  if (l.kind == Lowered::Scalar)
    return l.scalar;
  return loadElem(l.vec, i);
}

Lowered KernelEmitter::elementwiseVector(int64_t n,
                                         ArrayRef<Value> ownedInputs,
                                         ArrayRef<Value> foreignInputs,
                                         function_ref<Value(Value)> fn) {
  touchInputs(ownedInputs, /*owned=*/true);
  touchInputs(foreignInputs, /*owned=*/false);
  Lowered out;
  out.kind = Lowered::Vector;
  out.vec = newShared(n);
  touch(out.vec, /*write=*/true, /*owned=*/true);
  forEachOwned(n, [&](Value i) { storeShared(out.vec, i, fn(i)); });
  return out;
}

Value KernelEmitter::reduceOf(Value fwpVector, ReduceKind kind,
                              function_ref<Value(Value)> perElement) {
  int64_t n = cast<VectorType>(fwpVector.getType()).getDimSize(0);
  touchInputs({fwpVector}, /*owned=*/false);
  return warpAllReduce(n, kind, [&](Value i) {
    Value x = elemOf(fwpVector, i);
    return perElement ? perElement(x) : x;
  });
}

Value KernelEmitter::dpfpFeature(Value x, Value p, int64_t n) {
  Value low = ult(p, cIndex(n));
  Value index = select(low, p, arith::SubIOp::create(b, loc, p, cIndex(n)));
  Value xi = elemOf(x, index);
  Value signedX = select(low, xi, arith::NegFOp::create(b, loc, xi));
  return arith::MaximumFOp::create(b, loc, signedX, cFloat(0.0));
}

std::pair<Value, Value> KernelEmitter::meanAndRstd(Value x, int64_t n,
                                                   double eps) {
  Value invN = cFloat(1.0 / double(n));
  Value mean = mulF(reduceOf(x, ReduceKind::Add), invN);
  Value var = mulF(reduceOf(x, ReduceKind::Add,
                            [&](Value xi) {
                              Value d = subF(xi, mean);
                              return mulF(d, d);
                            }),
                   invN);
  Value rstd = divF(cFloat(1.0), math::SqrtOp::create(b, loc, addF(var, cFloat(eps))));
  return {mean, rstd};
}

LogicalResult
KernelEmitter::lowerElementwise(Operation *op,
                                function_ref<Value(ArrayRef<Value>)> fn) {
  Type type = op->getResult(0).getType();
  SmallVector<Value> operands(op->getOperands());
  if (isa<FastWeightType>(type)) {
    Lowered out;
    out.kind = Lowered::Matrix;
    out.layout = layoutOf(type);
    for (int64_t c = 0; c < out.layout.C; ++c) {
      SmallVector<Value> args;
      for (Value v : operands)
        args.push_back(lowered.at(v).cols[c]);
      out.cols.push_back(fn(args));
    }
    setValue(op->getResult(0), out);
    return success();
  }
  if (!isa<VectorType>(type)) {
    SmallVector<Value> args;
    for (Value v : operands)
      args.push_back(lowered.at(v).scalar);
    Lowered out;
    out.kind = Lowered::Scalar;
    out.scalar = fn(args);
    setValue(op->getResult(0), out);
    return success();
  }
  int64_t n = cast<VectorType>(type).getDimSize(0);
  setValue(op->getResult(0),
           elementwiseVector(n, operands, {}, [&](Value i) {
             SmallVector<Value> args;
             for (Value v : operands)
               args.push_back(elemOf(v, i));
             return fn(args);
           }));
  return success();
}

Lowered KernelEmitter::lowerRead(ReadOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &q = lowered.at(op.getQuery()).vec;
  touch(q, false, false);
  Value qv = gatherRows(q, l);
  Lowered out;
  out.kind = Lowered::Vector;
  out.vec = newShared(l.V);
  touch(out.vec, true, /*owned=*/l.S == 1);
  for (int64_t c = 0; c < l.C; ++c) {
    Value products = mulF(w.cols[c], qv);
    Value partial = vector::ReductionOp::create(
        b, loc, vector::CombiningKind::ADD, products, Value(),
        arith::FastMathFlags::reassoc);
    Value sum = groupReduce(partial, l.S);
    storeColumnResult(l, c, out.vec, sum);
  }
  return out;
}

Lowered KernelEmitter::lowerReadTransposed(ReadTransposedOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &x = lowered.at(op.getValue()).vec;
  touch(x, false, colReadsOwned(l));
  // partial[r] = sum over the thread's columns of W[e_r, m] x[m].
  Value partial;
  for (int64_t c = 0; c < l.C; ++c) {
    Value xm = gatherCol(x, l, c);
    Value splat = vector::BroadcastOp::create(b, loc, stripType(l), xm);
    partial = partial ? vector::FMAOp::create(b, loc, w.cols[c], splat, partial)
                      : mulF(w.cols[c], splat);
  }
  return reduceRowPartials(l, partial);
}

Lowered KernelEmitter::lowerWriteSum(WriteSumOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &k = lowered.at(op.getKey()).vec;
  const VecRef &v = lowered.at(op.getValue()).vec;
  touch(k, false, false);
  touch(v, false, colReadsOwned(l));
  Value kv = gatherRows(k, l);
  Lowered out;
  out.kind = Lowered::Matrix;
  out.layout = l;
  for (int64_t c = 0; c < l.C; ++c) {
    Value vm = vector::BroadcastOp::create(b, loc, stripType(l),
                                           gatherCol(v, l, c));
    out.cols.push_back(vector::FMAOp::create(b, loc, kv, vm, w.cols[c]));
  }
  return out;
}

void KernelEmitter::lowerWriteDelta(WriteDeltaOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &k = lowered.at(op.getKey()).vec;
  const VecRef &v = lowered.at(op.getValue()).vec;
  Value beta = lowered.at(op.getBeta()).scalar;
  touch(k, false, false);
  touch(v, false, colReadsOwned(l));
  Value kv = gatherRows(k, l);
  bool keepRetrieved = !op.getRetrieved().use_empty();
  Lowered retrieved;
  retrieved.kind = Lowered::Vector;
  if (keepRetrieved) {
    retrieved.vec = newShared(l.V);
    touch(retrieved.vec, true, l.S == 1);
  }
  Lowered out;
  out.kind = Lowered::Matrix;
  out.layout = l;
  for (int64_t c = 0; c < l.C; ++c) {
    Value products = mulF(w.cols[c], kv);
    Value partial = vector::ReductionOp::create(
        b, loc, vector::CombiningKind::ADD, products, Value(),
        arith::FastMathFlags::reassoc);
    Value vbar = groupReduce(partial, l.S);
    Value u = mulF(beta, subF(gatherCol(v, l, c), vbar));
    Value us = vector::BroadcastOp::create(b, loc, stripType(l), u);
    out.cols.push_back(vector::FMAOp::create(b, loc, kv, us, w.cols[c]));
    if (!keepRetrieved)
      continue;
    storeColumnResult(l, c, retrieved.vec, vbar);
  }
  setValue(op.getNewWeight(), out);
  if (keepRetrieved)
    setValue(op.getRetrieved(), retrieved);
}

Lowered KernelEmitter::lowerScaleRows(ScaleRowsOp op) {
  const Lowered &w = lowered.at(op.getWeight());
  const MatrixLayout &l = w.layout;
  const VecRef &a = lowered.at(op.getFactors()).vec;
  touch(a, false, false);
  Value rows = gatherRows(a, l);
  Lowered out;
  out.kind = Lowered::Matrix;
  out.layout = l;
  for (int64_t c = 0; c < l.C; ++c)
    out.cols.push_back(mulF(w.cols[c], rows));
  return out;
}

Lowered KernelEmitter::lowerRowDot(RowDotOp op) {
  const Lowered &x = lowered.at(op.getLhs());
  const Lowered &y = lowered.at(op.getRhs());
  const MatrixLayout &l = x.layout;
  // partial[r] = sum over the thread's columns of A[e_r, m] B[e_r, m].
  Value partial;
  for (int64_t c = 0; c < l.C; ++c)
    partial = partial ? vector::FMAOp::create(b, loc, x.cols[c], y.cols[c], partial)
                      : mulF(x.cols[c], y.cols[c]);
  return reduceRowPartials(l, partial);
}

static int64_t sizeOf(Value v) {
  return cast<VectorType>(v.getType()).getDimSize(0);
}

LogicalResult KernelEmitter::lowerOp(Operation *op) {
  // Pure ops whose results are all unused cost nothing.
  if (llvm::all_of(op->getResults(), [](Value r) { return r.use_empty(); }))
    return success();
  auto vectorResult = [&](Lowered l) {
    setValue(op->getResult(0), l);
    return success();
  };
  auto scalarResult = [&](Value s) {
    Lowered l;
    l.kind = Lowered::Scalar;
    l.scalar = s;
    setValue(op->getResult(0), l);
    return success();
  };
  auto one = [&] { return cFloat(1.0); };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<ReadOp>([&](auto read) { return vectorResult(lowerRead(read)); })
      .Case<ReadTransposedOp>(
          [&](auto read) { return vectorResult(lowerReadTransposed(read)); })
      .Case<WriteSumOp>([&](auto write) {
        setValue(write.getResult(), lowerWriteSum(write));
        return success();
      })
      .Case<WriteDeltaOp>([&](auto write) {
        lowerWriteDelta(write);
        return success();
      })
      .Case<ScaleRowsOp>([&](ScaleRowsOp scale) {
        setValue(scale.getResult(), lowerScaleRows(scale));
        return success();
      })
      .Case<RowDotOp>(
          [&](RowDotOp dot) { return vectorResult(lowerRowDot(dot)); })
      .Case<SqrtOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) -> Value {
          return math::SqrtOp::create(b, loc, x[0]);
        });
      })
      .Case<EluPlusOneOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) {
          Value positive = arith::CmpFOp::create(
              b, loc, arith::CmpFPredicate::OGT, x[0], cFloat(0.0));
          return select(positive, addF(x[0], one()), exp(x[0]));
        });
      })
      .Case<SigmoidOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return sigmoid(x[0]); });
      })
      .Case<TanhOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) -> Value {
          return math::TanhOp::create(b, loc, x[0]);
        });
      })
      .Case<NegOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> x) -> Value {
          return arith::NegFOp::create(b, loc, x[0]);
        });
      })
      .Case<AddOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return addF(x[0], x[1]); });
      })
      .Case<SubOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return subF(x[0], x[1]); });
      })
      .Case<MulOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return mulF(x[0], x[1]); });
      })
      .Case<DivOp>([&](auto) {
        return lowerElementwise(
            op, [&](ArrayRef<Value> x) { return divF(x[0], x[1]); });
      })
      .Case<ScaleOp>([&](ScaleOp scale) {
        Value factor = lowered.at(scale.getFactor()).scalar;
        Value x = scale.getX();
        return vectorResult(elementwiseVector(
            sizeOf(x), {x}, {},
            [&](Value i) { return mulF(elemOf(x, i), factor); }));
      })
      .Case<ConstantOp>([&](ConstantOp constant) {
        double splat = constant.getValue().convertToDouble();
        if (isa<FastWeightType>(constant.getType())) {
          setValue(constant.getResult(),
                   splatMatrix(layoutOf(constant.getType()), splat));
          return success();
        }
        Value value = cFloat(splat);
        if (!isa<VectorType>(constant.getType()))
          return scalarResult(value);
        Lowered l;
        l.kind = Lowered::Vector;
        l.vec.kind = VecRef::Splat;
        l.vec.size = sizeOf(constant.getResult());
        l.vec.splat = value;
        return vectorResult(l);
      })
      .Case<DotOp>([&](DotOp dot) {
        Value x = dot.getLhs(), y = dot.getRhs();
        touchInputs({x, y}, false);
        return scalarResult(warpAllReduce(
            sizeOf(x), ReduceKind::Add,
            [&](Value i) { return mulF(elemOf(x, i), elemOf(y, i)); }));
      })
      .Case<SumNormOp>([&](SumNormOp norm) {
        Value x = norm.getX();
        Value sum = addF(reduceOf(x, ReduceKind::Add),
                         cFloat(norm.getEps().convertToDouble()));
        return vectorResult(elementwiseVector(
            sizeOf(x), {}, {x}, [&](Value i) { return divF(elemOf(x, i), sum); }));
      })
      .Case<SoftmaxOp>([&](SoftmaxOp softmax) {
        Value x = softmax.getX();
        Value max = reduceOf(x, ReduceKind::Max);
        Value sum = reduceOf(x, ReduceKind::Add,
                             [&](Value xi) { return exp(subF(xi, max)); });
        return vectorResult(elementwiseVector(
            sizeOf(x), {}, {x},
            [&](Value i) { return divF(exp(subF(elemOf(x, i), max)), sum); }));
      })
      .Case<DpfpOp>([&](DpfpOp dpfp) {
        Value x = dpfp.getX();
        int64_t n = sizeOf(x), twoN = 2 * n;
        auto r = [&](Value p) { return dpfpFeature(x, p, n); };
        return vectorResult(elementwiseVector(
            sizeOf(dpfp.getResult()), {}, {x}, [&](Value j) {
              // j = (s - 1) 2n + i:  r[i] r[(i + s) mod 2n].
              Value i = arith::RemUIOp::create(b, loc, j, cIndex(twoN));
              Value s = add(arith::DivUIOp::create(b, loc, j, cIndex(twoN)),
                            cIndex(1));
              Value partner =
                  arith::RemUIOp::create(b, loc, add(i, s), cIndex(twoN));
              return mulF(r(i), r(partner));
            }));
      })
      .Case<LayerNormOp>([&](LayerNormOp norm) {
        Value x = norm.getX();
        int64_t n = sizeOf(x);
        auto [mean, rstd] = meanAndRstd(x, n, norm.getEps().convertToDouble());
        Value w = norm.getWeight(), bias = norm.getBias();
        return vectorResult(elementwiseVector(
            n, {w, bias}, {x}, [&](Value i) {
              Value xhat = mulF(subF(elemOf(x, i), mean), rstd);
              return addF(mulF(xhat, elemOf(w, i)), elemOf(bias, i));
            }));
      })
      .Case<EluPlusOneGradOp>([&](EluPlusOneGradOp grad) {
        // Given the map's output y: the slope is min(y, 1).
        return lowerElementwise(op, [&](ArrayRef<Value> a) {
          return mulF(a[1], arith::MinimumFOp::create(b, loc, a[0], one()));
        });
      })
      .Case<SigmoidGradOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> a) {
          return mulF(a[1], mulF(a[0], subF(one(), a[0])));
        });
      })
      .Case<TanhGradOp>([&](auto) {
        return lowerElementwise(op, [&](ArrayRef<Value> a) {
          return mulF(a[1], subF(one(), mulF(a[0], a[0])));
        });
      })
      .Case<SoftmaxGradOp>([&](SoftmaxGradOp grad) {
        Value y = grad.getX(), g = grad.getGrad();
        touchInputs({y, g}, false);
        Value dot = warpAllReduce(sizeOf(y), ReduceKind::Add, [&](Value i) {
          return mulF(elemOf(y, i), elemOf(g, i));
        });
        return vectorResult(elementwiseVector(
            sizeOf(y), {y, g}, {}, [&](Value i) {
              return mulF(elemOf(y, i), subF(elemOf(g, i), dot));
            }));
      })
      .Case<SumNormGradOp>([&](SumNormGradOp grad) {
        Value x = grad.getX(), g = grad.getGrad();
        touchInputs({x, g}, false);
        Value sum = addF(reduceOf(x, ReduceKind::Add),
                         cFloat(grad.getEps().convertToDouble()));
        Value gx = warpAllReduce(sizeOf(x), ReduceKind::Add, [&](Value i) {
          return mulF(elemOf(g, i), elemOf(x, i));
        });
        Value shift = divF(gx, sum);
        return vectorResult(elementwiseVector(
            sizeOf(x), {g}, {}, [&](Value i) {
              return divF(subF(elemOf(g, i), shift), sum);
            }));
      })
      .Case<DpfpGradOp>([&](DpfpGradOp grad) {
        Value x = grad.getX(), g = grad.getGrad();
        int64_t n = sizeOf(x), twoN = 2 * n, nu = grad.getNu();
        auto r = [&](Value p) { return dpfpFeature(x, p, n); };
        // dr[p] = sum_s g[(s-1) 2n + p] r[(p+s) mod 2n]
        //             + g[(s-1) 2n + (p-s) mod 2n] r[(p-s) mod 2n]
        auto dr = [&](Value p) {
          Value sum = cFloat(0.0);
          for (int64_t s = 1; s <= nu; ++s) {
            Value block = cIndex((s - 1) * twoN);
            Value up = arith::RemUIOp::create(b, loc, add(p, cIndex(s)),
                                              cIndex(twoN));
            Value down = arith::RemUIOp::create(
                b, loc, add(p, cIndex(twoN - s % twoN)), cIndex(twoN));
            Value gUp = elemOf(g, add(block, p));
            Value gDown = elemOf(g, add(block, down));
            sum = addF(sum, addF(mulF(gUp, r(up)), mulF(gDown, r(down))));
          }
          return sum;
        };
        return vectorResult(elementwiseVector(
            n, {}, {x, g}, [&](Value i) {
              Value xi = elemOf(x, i);
              Value pos = arith::CmpFOp::create(
                  b, loc, arith::CmpFPredicate::OGT, xi, cFloat(0.0));
              Value neg = arith::CmpFOp::create(
                  b, loc, arith::CmpFPredicate::OLT, xi, cFloat(0.0));
              Value dPos = select(pos, dr(i), cFloat(0.0));
              Value dNeg = select(neg, dr(add(i, cIndex(n))), cFloat(0.0));
              return subF(dPos, dNeg);
            }));
      })
      .Case<LayerNormGradOp>([&](LayerNormGradOp grad) {
        Value x = grad.getX(), w = grad.getWeight(), g = grad.getGrad();
        int64_t n = sizeOf(x);
        auto [mean, rstd] = meanAndRstd(x, n, grad.getEps().convertToDouble());
        auto xhatAt = [&](Value i) {
          return mulF(subF(elemOf(x, i), mean), rstd);
        };
        touchInputs({x, w, g}, false);
        Value invN = cFloat(1.0 / n);
        Value meanGw = mulF(warpAllReduce(n, ReduceKind::Add, [&](Value i) {
          return mulF(elemOf(g, i), elemOf(w, i));
        }), invN);
        Value meanGwXhat = mulF(warpAllReduce(n, ReduceKind::Add, [&](Value i) {
          return mulF(mulF(elemOf(g, i), elemOf(w, i)), xhatAt(i));
        }), invN);
        setValue(grad.getGradX(),
                 elementwiseVector(n, {x, w, g}, {}, [&](Value i) {
                   Value dxhat = mulF(elemOf(g, i), elemOf(w, i));
                   Value centred = subF(subF(dxhat, meanGw),
                                        mulF(xhatAt(i), meanGwXhat));
                   return mulF(rstd, centred);
                 }));
        setValue(grad.getGradWeight(),
                 elementwiseVector(n, {x, g}, {}, [&](Value i) {
                   return mulF(elemOf(g, i), xhatAt(i));
                 }));
        // The bias gradient is the output gradient itself.
        Lowered bias = lowered.at(g);
        if (bias.vec.kind == VecRef::Shared)
          arena.retain(bias.vec.slot);
        lowered[grad.getGradBias()] = bias;
        return success();
      })
      .Default([&](Operation *other) {
        return other->emitOpError()
               << "has no GPU lowering (convert-fwp-to-gpu)";
      });
}
