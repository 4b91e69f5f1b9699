//===- ThreadLayout.cpp - Matrices spread over threads --------------------===//
//
// A K x V fast weight lives in registers, in column strips: S threads per
// column, C columns and R rows per thread (MatrixLayout). This file
// computes the layout and the block size, and emits the index arithmetic,
// the gathers and the matrix loads and stores that follow from them.
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"

#include "llvm/Support/MathExtras.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

MatrixLayout MatrixLayout::get(int64_t K, int64_t V, int64_t NT) {
  MatrixLayout l;
  l.K = K;
  l.V = V;
  int64_t Vp = llvm::PowerOf2Ceil(V), Kp = llvm::PowerOf2Ceil(K);
  l.S = Vp >= NT ? 1 : std::min({NT / Vp, Kp, kWarpSize});
  l.colsPerPass = NT / l.S;
  l.C = ceilDiv(V, l.colsPerPass);
  l.R = ceilDiv(K, l.S);
  l.rowsMasked = l.R * l.S != K;
  l.colsMasked = l.C * l.colsPerPass != V;
  return l;
}

int64_t gpu_kernel::chooseBlockSize(TypeRange argTypes) {
  // About 32 registers of persistent fast weight per thread.
  int64_t elements = 0;
  for (Type type : argTypes)
    if (auto w = dyn_cast<FastWeightType>(type))
      elements += llvm::PowerOf2Ceil(w.getKeyDim()) *
                  llvm::PowerOf2Ceil(w.getValueDim());
  int64_t threads = llvm::PowerOf2Ceil(std::max<int64_t>(1, elements / 32));
  return std::clamp<int64_t>(threads, 32, 1024);
}

Value KernelEmitter::threadS(const MatrixLayout &l) {
  Value &s = sCache[l.S];
  if (!s) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointAfter(tid.getDefiningOp());
    s = arith::RemUIOp::create(b, loc, tid, cIndex(l.S));
  }
  return s;
}

Value KernelEmitter::threadMBase(const MatrixLayout &l) {
  Value &m = mBaseCache[l.S];
  if (!m) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointAfter(tid.getDefiningOp());
    m = arith::DivUIOp::create(b, loc, tid, cIndex(l.S));
  }
  return m;
}

Value KernelEmitter::rowIndex(const MatrixLayout &l, int64_t r) {
  Value s = threadS(l);
  return r == 0 ? s : add(s, cIndex(l.S * r));
}

Value KernelEmitter::colIndex(const MatrixLayout &l, int64_t c) {
  Value m = threadMBase(l);
  return c == 0 ? m : add(m, cIndex(l.colsPerPass * c));
}

Value KernelEmitter::gatherRows(const VecRef &v, const MatrixLayout &l) {
  flush();
  SmallVector<Value> elems;
  for (int64_t r = 0; r < l.R; ++r) {
    Value e = rowIndex(l, r);
    if (l.rowsMasked && (r + 1) * l.S > l.K) {
      Value valid = ult(e, cIndex(l.K));
      Value x = loadElem(v, select(valid, e, cIndex(0)));
      elems.push_back(select(valid, x, cFloat(0.0)));
    } else {
      elems.push_back(loadElem(v, e));
    }
  }
  return vector::FromElementsOp::create(b, loc, stripType(l), elems);
}

Value KernelEmitter::gatherCol(const VecRef &v, const MatrixLayout &l,
                               int64_t c) {
  flush();
  Value m = colIndex(l, c);
  if (!l.colsMasked)
    return loadElem(v, m);
  Value valid = ult(m, cIndex(l.V));
  Value x = loadElem(v, select(valid, m, cIndex(0)));
  return select(valid, x, cFloat(0.0));
}

void KernelEmitter::storeColumnResult(const MatrixLayout &l, int64_t c,
                                     const VecRef &v, Value value) {
  Value m = colIndex(l, c);
  Value cond;
  if (l.S > 1)
    cond = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, threadS(l),
                                 cIndex(0));
  if (l.colsMasked) {
    Value valid = ult(m, cIndex(l.V));
    cond = cond ? arith::AndIOp::create(b, loc, cond, valid) : valid;
  }
  flush();
  if (!cond) {
    storeShared(v, m, value);
    return;
  }
  OpBuilder::InsertionGuard guard(b);
  auto ifOp = scf::IfOp::create(b, loc, cond, false);
  b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  storeShared(v, m, value);
}

Lowered KernelEmitter::loadMatrix(Value ptr, Value base,
                                  const MatrixLayout &l) {
  Lowered m;
  m.kind = Lowered::Matrix;
  m.layout = l;
  for (int64_t c = 0; c < l.C; ++c) {
    Value col = colIndex(l, c);
    Value colValid = l.colsMasked ? ult(col, cIndex(l.V)) : Value();
    SmallVector<Value> elems;
    for (int64_t r = 0; r < l.R; ++r) {
      Value row = rowIndex(l, r);
      Value valid = colValid;
      if (l.rowsMasked && (r + 1) * l.S > l.K) {
        Value rowValid = ult(row, cIndex(l.K));
        valid = valid ? arith::AndIOp::create(b, loc, valid, rowValid)
                      : rowValid;
      }
      Value index = add(base, add(mul(row, cIndex(l.V)), col));
      if (!valid) {
        elems.push_back(loadGlobal(ptr, index));
        continue;
      }
      Value x = loadGlobal(ptr, select(valid, index, base));
      elems.push_back(select(valid, x, cFloat(0.0)));
    }
    m.cols.push_back(
        vector::FromElementsOp::create(b, loc, stripType(l), elems));
  }
  return m;
}

void KernelEmitter::storeMatrix(const Lowered &m, Value ptr, Value base) {
  const MatrixLayout &l = m.layout;
  for (int64_t c = 0; c < l.C; ++c) {
    Value col = colIndex(l, c);
    Value colValid = l.colsMasked ? ult(col, cIndex(l.V)) : Value();
    for (int64_t r = 0; r < l.R; ++r) {
      Value row = rowIndex(l, r);
      Value valid = colValid;
      if (l.rowsMasked && (r + 1) * l.S > l.K) {
        Value rowValid = ult(row, cIndex(l.K));
        valid = valid ? arith::AndIOp::create(b, loc, valid, rowValid)
                      : rowValid;
      }
      Value x = vector::ExtractOp::create(b, loc, m.cols[c], r);
      Value index = add(base, add(mul(row, cIndex(l.V)), col));
      if (!valid) {
        storeGlobal(ptr, index, x);
        continue;
      }
      OpBuilder::InsertionGuard guard(b);
      auto ifOp = scf::IfOp::create(b, loc, valid, false);
      b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      storeGlobal(ptr, index, x);
    }
  }
}

Lowered KernelEmitter::splatMatrix(const MatrixLayout &l, double value) {
  Lowered m;
  m.kind = Lowered::Matrix;
  m.layout = l;
  auto type = cast<VectorType>(stripType(l));
  Value zero = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(type, b.getFloatAttr(elemType, value)));
  m.cols.assign(l.C, zero);
  return m;
}
