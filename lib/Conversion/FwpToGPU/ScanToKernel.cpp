//===- ScanToKernel.cpp - One GPU kernel per fwp.scan ---------------------===//
//
// The kernel of a scan: its gpu.module and gpu.func, the ABI attributes,
// params and initial states, the time loop (one step of the body per
// iteration, with a prefetch of the next step), outputs and final
// states. KernelEmitter.h describes the scheme and the other parts.
//
//===----------------------------------------------------------------------===//

#include "KernelEmitter.h"
#include "fwp/Dialect/Fwp/IR/KernelArgs.h"

#include "fwp/Dialect/Fwp/Transforms/Passes.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::gpu_kernel;

LogicalResult KernelEmitter::checkTypes() {
  auto elementOf = [](Type type) -> Type {
    if (auto vector = dyn_cast<VectorType>(type))
      return vector.getElementType();
    if (auto weight = dyn_cast<FastWeightType>(type))
      return weight.getElementType();
    return type;
  };
  SmallVector<Type> types;
  for (Type type : scan.getBodyBlock().getArgumentTypes())
    types.push_back(type);
  for (Attribute attr : scan.getOutputTypes())
    types.push_back(cast<TypeAttr>(attr).getValue());
  for (Type type : types) {
    Type element = elementOf(type);
    if (!element.isF32() && !element.isF64())
      return scan.emitOpError() << "convert-fwp-to-gpu supports f32 and f64 "
                                   "values, not "
                                << type;
    if (!elemType)
      elemType = element;
    if (element != elemType)
      return scan.emitOpError()
             << "convert-fwp-to-gpu needs one element type per scan, found "
             << elemType << " and " << element;
  }
  if (!elemType)
    elemType = b.getF32Type();
  return success();
}

ArrayAttr KernelEmitter::buildArgsAttr() {
  auto shapeOf = [&](Type type, ArrayRef<Attribute> prefix, bool perStep) {
    SmallVector<Attribute> shape(prefix);
    if (perStep)
      shape.push_back(b.getI64IntegerAttr(-1));
    if (auto vector = dyn_cast<VectorType>(type)) {
      shape.push_back(b.getI64IntegerAttr(vector.getDimSize(0)));
    } else if (auto w = dyn_cast<FastWeightType>(type)) {
      shape.push_back(b.getI64IntegerAttr(w.getKeyDim()));
      shape.push_back(b.getI64IntegerAttr(w.getValueDim()));
    } else if (!perStep) {
      shape.push_back(b.getI64IntegerAttr(1));
    }
    return b.getArrayAttr(shape);
  };
  Attribute batchDim = b.getStringAttr("B"), headDim = b.getStringAttr("H");
  SmallVector<Attribute> args;
  // Roles and names as the CPU manifest gives them (kernelArgRole).
  auto addArg = [&](ScanArgKind kind, StringRef name, ArrayAttr shape) {
    auto [role, bound] = kernelArgRole(scan, kind, name);
    args.push_back(b.getDictionaryAttr(
        {b.getNamedAttr("role", b.getStringAttr(role)),
         b.getNamedAttr("name", b.getStringAttr(bound)),
         b.getNamedAttr("shape", shape)}));
  };
  auto nameAt = [](ArrayAttr names, unsigned i) {
    return cast<StringAttr>(names[i]).getValue();
  };
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs()))
    addArg(ScanArgKind::Seq, nameAt(scan.getSeqNames(), i),
           shapeOf(arg.getType(), {batchDim, headDim}, true));
  for (auto [i, arg] : llvm::enumerate(scan.getParamArgs()))
    addArg(ScanArgKind::Param, nameAt(scan.getParamNames(), i),
           shapeOf(arg.getType(), {headDim}, false));
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs()))
    addArg(ScanArgKind::State, nameAt(scan.getStateNames(), i),
           shapeOf(arg.getType(), {batchDim, headDim}, false));
  for (auto [i, attr] : llvm::enumerate(scan.getOutputTypes()))
    addArg(ScanArgKind::Output, nameAt(scan.getOutputNames(), i),
           shapeOf(cast<TypeAttr>(attr).getValue(), {batchDim, headDim}, true));
  return b.getArrayAttr(args);
}

void KernelEmitter::prefetchNextStep() {
  // The next step's seq rows go to L1 now, so that its loads do not wait
  // for memory: step t+1 (t-1 when reversed) exists unless t is the last.
  Value hasNext =
      scan.getReverse()
          ? arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, t,
                                  cIndex(1))
                .getResult()
          : ult(add(t, cIndex(1)), T);
  Value next = scan.getReverse()
                   ? arith::SubIOp::create(b, loc, t, cIndex(1)).getResult()
                   : add(t, cIndex(1));
  OpBuilder::InsertionGuard guard(b);
  auto ifNext = scf::IfOp::create(b, loc, hasNext, false);
  b.setInsertionPoint(ifNext.thenBlock()->getTerminator());
  int64_t lineElements = 128 / (elemType.getIntOrFloatBitWidth() / 8);
  Value row = add(mul(bh, T), next);
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs())) {
    int64_t n = 1;
    if (auto vector = dyn_cast<VectorType>(arg.getType()))
      n = vector.getDimSize(0);
    else if (auto w = dyn_cast<FastWeightType>(arg.getType()))
      n = w.getKeyDim() * w.getValueDim();
    // One thread per 128-byte line of the row (which may straddle one more).
    int64_t lines = ceilDiv(n, lineElements) + (n > 1 ? 1 : 0);
    OpBuilder::InsertionGuard inner(b);
    auto ifThread = scf::IfOp::create(b, loc, ult(tid, cIndex(std::min(lines, NT))), false);
    b.setInsertionPoint(ifThread.thenBlock()->getTerminator());
    // Thread j touches element min(j * lineElements, n - 1) of the row.
    Value element = arith::MinUIOp::create(
        b, loc, mul(tid, cIndex(lineElements)), cIndex(n - 1));
    Value index = add(mul(row, cIndex(n)), element);
    Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
    Value addr = LLVM::GEPOp::create(b, loc, seqPtrs[i].getType(), elemType,
                                     seqPtrs[i], ValueRange{i64});
    // Inline PTX: LLVM selects llvm.nvvm.prefetch.L1 for sm_90 only.
    LLVM::InlineAsmOp::create(
        b, loc, Type(), ValueRange{addr}, b.getStringAttr(kPtxPrefetchL1),
        b.getStringAttr("l"), b.getUnitAttr(), UnitAttr(),
        LLVM::TailCallKindAttr(), LLVM::AsmDialectAttr(), ArrayAttr());
  }
}

LogicalResult KernelEmitter::emitStep(Block::BlockArgListType iterArgs,
                                      SmallVectorImpl<Value> &yielded) {
  Block &body = scan.getBodyBlock();
  // Each prefetched input keeps an address live across the loop: skip it
  // when there are many (ptxas then spills instead).
  if (prefetch && scan.getNumSeq() > 0 &&
      scan.getNumSeq() <= kMaxPrefetchedInputs)
    prefetchNextStep();
  // Seq inputs at step t, read in place from global memory.
  for (auto [i, arg] : llvm::enumerate(scan.getSeqArgs())) {
    Value rowIndex = add(mul(bh, T), t);
    Type type = arg.getType();
    Lowered l;
    if (auto vector = dyn_cast<VectorType>(type)) {
      l.kind = Lowered::Vector;
      l.vec.kind = VecRef::Global;
      l.vec.size = vector.getDimSize(0);
      l.vec.ptr = seqPtrs[i];
      l.vec.base = mul(rowIndex, cIndex(vector.getDimSize(0)));
    } else if (auto w = dyn_cast<FastWeightType>(type)) {
      l = loadMatrix(seqPtrs[i],
                     mul(rowIndex, cIndex(w.getKeyDim() * w.getValueDim())),
                     layoutOf(type));
    } else {
      l.kind = Lowered::Scalar;
      l.scalar = loadGlobal(seqPtrs[i], rowIndex);
    }
    lowered[arg] = l;
  }
  // States at t - 1: matrices and scalars from the loop's iter_args,
  // vectors from their persistent slots.
  unsigned iter = 0;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Type type = arg.getType();
    Lowered l;
    if (isa<FastWeightType>(type)) {
      l.kind = Lowered::Matrix;
      l.layout = layoutOf(type);
      for (int64_t c = 0; c < l.layout.C; ++c)
        l.cols.push_back(iterArgs[iter++]);
    } else if (isa<VectorType>(type)) {
      l.kind = Lowered::Vector;
      l.vec = stateSlots[i];
    } else {
      l.kind = Lowered::Scalar;
      l.scalar = iterArgs[iter++];
    }
    lowered[arg] = l;
  }

  Location scanLoc = loc;
  for (Operation &op : body.without_terminator()) {
    // Emitted code points back at the op it implements.
    loc = op.getLoc();
    if (failed(lowerOp(&op)))
      return failure();
    releaseDead(&op);
  }
  loc = scanLoc;

  auto yield = cast<YieldOp>(body.getTerminator());
  writeOutputsAndStates(yield);
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Value next = yield.getValues()[i];
    Type type = arg.getType();
    if (isa<FastWeightType>(type)) {
      llvm::append_range(yielded, lowered.at(next).cols);
    } else if (!isa<VectorType>(type)) {
      yielded.push_back(lowered.at(next).scalar);
    }
  }
  releaseDead(yield);
  // The next step reads what this one wrote.
  flush();
  if (!barriers.epochEmpty())
    barrier();
  return success();
}

void KernelEmitter::writeOutputsAndStates(YieldOp yield) {
  unsigned numStates = scan.getNumStates();
  Value rowIndex = add(mul(bh, T), t);
  // Outputs first: one may be a state's value at t - 1.
  for (auto [i, value] : llvm::enumerate(yield.getValues().drop_front(numStates))) {
    const Lowered &l = lowered.at(value);
    Value ptr = outputPtrs[i];
    Type type = value.getType();
    if (auto w = dyn_cast<FastWeightType>(type)) {
      storeMatrix(l, ptr, mul(rowIndex, cIndex(w.getKeyDim() * w.getValueDim())));
    } else if (auto vector = dyn_cast<VectorType>(type)) {
      int64_t n = vector.getDimSize(0);
      touch(l.vec, false, true);
      Value base = mul(rowIndex, cIndex(n));
      forEachOwned(n, [&](Value e) {
        storeGlobal(ptr, add(base, e), loadElem(l.vec, e));
      });
    } else {
      OpBuilder::InsertionGuard guard(b);
      auto ifOp = scf::IfOp::create(
          b, loc,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                cIndex(0)),
          false);
      b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      storeGlobal(ptr, rowIndex, l.scalar);
    }
  }
  // Vector states: copy the new value into the state's slot. A new value
  // that is itself another state's slot is copied aside first.
  SmallVector<std::pair<unsigned, VecRef>> copies;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    if (!isa<VectorType>(arg.getType()))
      continue;
    VecRef source = lowered.at(yield.getValues()[i]).vec;
    if (source.kind == VecRef::Shared && source.slot == stateSlots[i].slot)
      continue;
    bool isOtherState = llvm::any_of(stateSlots, [&](const VecRef &s) {
      return s.kind == VecRef::Shared && source.kind == VecRef::Shared &&
             s.slot == source.slot;
    });
    if (isOtherState) {
      VecRef temp = newShared(source.size);
      touch(source, false, true);
      touch(temp, true, true);
      forEachOwned(source.size,
                   [&](Value e) { storeShared(temp, e, loadElem(source, e)); });
      source = temp;
    }
    copies.push_back({unsigned(i), source});
  }
  for (auto &[i, source] : copies) {
    touch(source, false, true);
    touch(stateSlots[i], true, true);
    forEachOwned(source.size, [&](Value e) {
      storeShared(stateSlots[i], e, loadElem(source, e));
    });
  }
}

LogicalResult KernelEmitter::emit() {
  if (failed(checkTypes()))
    return failure();
  if (NT == 0)
    NT = chooseBlockSize(scan.getBodyBlock().getArgumentTypes());
  if (NT < kWarpSize || NT > 1024 || !llvm::isPowerOf2_64(NT))
    return scan.emitOpError() << "GPU block size must be a power of two in "
                                 "[32, 1024], not "
                              << NT;
  barriers = BarrierPlanner(NT);
  for (BlockArgument arg : scan.getBodyBlock().getArguments())
    if (auto w = dyn_cast<FastWeightType>(arg.getType()))
      if (w.getKeyDim() < 1 || w.getValueDim() < 1)
        return scan.emitOpError() << "empty fast weight " << w;

  Block &body = scan.getBodyBlock();
  for (Operation &op : body)
    for (Value v : op.getOperands())
      lastUse[v] = &op;

  // gpu.module @<scan>_gpu { gpu.func @<scan>_kernel(ptrs..., B, H, T) }
  b.setInsertionPoint(scan);
  auto module = gpu::GPUModuleOp::create(b, loc, gpuModuleName(scan.getSymName()));
  b.setInsertionPointToStart(module.getBody());
  Type ptrType = LLVM::LLVMPointerType::get(b.getContext());
  unsigned numBuffers = scan.getNumSeq() + scan.getNumParams() +
                        scan.getNumStates() + scan.getNumOutputs();
  SmallVector<Type> argTypes(numBuffers, ptrType);
  argTypes.append(3, b.getI64Type());
  auto func = gpu::GPUFuncOp::create(b, loc, gpuKernelName(scan.getSymName()),
                                     b.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(
      b.getDenseI32ArrayAttr({int32_t(NT), 1, 1}));
  Block &entry = func.getBody().front();
  b.setInsertionPointToStart(&entry);

  auto args = entry.getArguments();
  unsigned next = 0;
  auto take = [&](unsigned n, SmallVectorImpl<Value> &into) {
    for (unsigned i = 0; i < n; ++i)
      into.push_back(args[next++]);
  };
  take(scan.getNumSeq(), seqPtrs);
  take(scan.getNumParams(), paramPtrs);
  take(scan.getNumStates(), statePtrs);
  take(scan.getNumOutputs(), outputPtrs);
  auto toIndex = [&](Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v).getResult();
  };
  B = toIndex(args[next]);
  H = toIndex(args[next + 1]);
  T = toIndex(args[next + 2]);

  tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  bh = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  head = arith::RemUIOp::create(b, loc, bh, H);
  lane = arith::RemUIOp::create(b, loc, tid, cIndex(kWarpSize));
  warp = arith::DivUIOp::create(b, loc, tid, cIndex(kWarpSize));
  // Dynamic shared memory: a public zero-sized workgroup global becomes
  // `.extern .shared .b8 fwp_shared[]` in PTX. (gpu.dynamic_shared_memory
  // makes an internal global, which NVPTX demotes to a 1-byte static one.)
  Attribute workgroup = gpu::AddressSpaceAttr::get(
      b.getContext(), gpu::GPUDialect::getWorkgroupAddressSpace());
  auto globalType =
      MemRefType::get({0}, elemType, MemRefLayoutAttrInterface{}, workgroup);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(func);
    memref::GlobalOp::create(b, loc, b.getStringAttr(kSharedSymbol),
                             b.getStringAttr("public"),
                             TypeAttr::get(globalType), Attribute(),
                             UnitAttr(), b.getI64IntegerAttr(16));
  }
  Value global = memref::GetGlobalOp::create(b, loc, globalType, kSharedSymbol);
  arenaSizeConst = arith::ConstantOp::create(b, loc, b.getIndexAttr(0));
  auto arenaType = MemRefType::get({ShapedType::kDynamic}, elemType,
                                   MemRefLayoutAttrInterface{}, workgroup);
  arenaMem = memref::ReinterpretCastOp::create(
      b, loc, arenaType, global, OpFoldResult(b.getIndexAttr(0)),
      ArrayRef<OpFoldResult>{arenaSizeConst.getResult()},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1)});

  // Params: vectors are read in place, matrices and scalars loaded once.
  for (auto [i, arg] : llvm::enumerate(scan.getParamArgs())) {
    Type type = arg.getType();
    Lowered l;
    if (auto vector = dyn_cast<VectorType>(type)) {
      l.kind = Lowered::Vector;
      l.vec.kind = VecRef::Global;
      l.vec.size = vector.getDimSize(0);
      l.vec.ptr = paramPtrs[i];
      l.vec.base = mul(head, cIndex(vector.getDimSize(0)));
    } else if (auto w = dyn_cast<FastWeightType>(type)) {
      l = loadMatrix(paramPtrs[i],
                     mul(head, cIndex(w.getKeyDim() * w.getValueDim())),
                     layoutOf(type));
    } else {
      l.kind = Lowered::Scalar;
      l.scalar = loadGlobal(paramPtrs[i], head);
    }
    lowered[arg] = l;
  }
  // Initial states.
  SmallVector<Value> init;
  stateSlots.resize(scan.getNumStates());
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Type type = arg.getType();
    if (auto w = dyn_cast<FastWeightType>(type)) {
      Lowered m = loadMatrix(statePtrs[i],
                             mul(bh, cIndex(w.getKeyDim() * w.getValueDim())),
                             layoutOf(type));
      llvm::append_range(init, m.cols);
    } else if (auto vector = dyn_cast<VectorType>(type)) {
      int64_t n = vector.getDimSize(0);
      stateSlots[i] = newShared(n, /*persistent=*/true);
      touch(stateSlots[i], true, true);
      Value base = mul(bh, cIndex(n));
      forEachOwned(n, [&](Value e) {
        storeShared(stateSlots[i], e, loadGlobal(statePtrs[i], add(base, e)));
      });
    } else {
      init.push_back(loadGlobal(statePtrs[i], bh));
    }
  }
  flush();
  if (!barriers.epochEmpty())
    barrier();

  // The time loop.
  auto loop = scf::ForOp::create(b, loc, cIndex(0), T, cIndex(1), init);
  LogicalResult stepResult = success();
  {
    OpBuilder::InsertionGuard guard(b);
    Block *loopBody = loop.getBody();
    if (!loopBody->empty())
      loopBody->getTerminator()->erase();
    b.setInsertionPointToStart(loopBody);
    Value i = loop.getInductionVar();
    t = scan.getReverse()
            ? arith::SubIOp::create(b, loc, arith::SubIOp::create(b, loc, T, i),
                                    cIndex(1))
                  .getResult()
            : i;
    SmallVector<Value> yielded;
    stepResult = emitStep(loop.getRegionIterArgs(), yielded);
    scf::YieldOp::create(b, loc, yielded);
  }
  if (failed(stepResult))
    return failure();

  // Final states.
  unsigned iter = 0;
  bool scalarStates = false;
  for (BlockArgument arg : scan.getStateArgs())
    scalarStates |= !isa<VectorType, FastWeightType>(arg.getType());
  if (scalarStates)
    barrier(); // other threads may still read the initial scalars
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs())) {
    Type type = arg.getType();
    if (auto w = dyn_cast<FastWeightType>(type)) {
      Lowered m;
      m.kind = Lowered::Matrix;
      m.layout = layoutOf(type);
      for (int64_t c = 0; c < m.layout.C; ++c)
        m.cols.push_back(loop.getResult(iter++));
      storeMatrix(m, statePtrs[i],
                  mul(bh, cIndex(w.getKeyDim() * w.getValueDim())));
    } else if (auto vector = dyn_cast<VectorType>(type)) {
      int64_t n = vector.getDimSize(0);
      touch(stateSlots[i], false, true);
      Value base = mul(bh, cIndex(n));
      forEachOwned(n, [&](Value e) {
        storeGlobal(statePtrs[i], add(base, e), loadElem(stateSlots[i], e));
      });
    } else {
      Value value = loop.getResult(iter++);
      OpBuilder::InsertionGuard guard(b);
      auto ifOp = scf::IfOp::create(
          b, loc,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tid,
                                cIndex(0)),
          false);
      b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
      storeGlobal(statePtrs[i], bh, value);
    }
  }
  gpu::ReturnOp::create(b, loc);

  int64_t elementBytes = elemType.getIntOrFloatBitWidth() / 8;
  int64_t sharedBytes = arena.size() * elementBytes;
  arenaSizeConst.setValueAttr(b.getIndexAttr(arena.size()));
  if (sharedBytes > kMaxSharedBytes)
    return scan.emitOpError()
           << "needs " << sharedBytes
           << " bytes of shared memory for its vectors; no GPU has more than "
           << kMaxSharedBytes;

  StringRef role = "forward";
  if (auto roleAttr = scan->getAttrOfType<StringAttr>(kRoleAttrName))
    role = roleAttr.getValue();
  func->setAttr(kGpuScanAttr, b.getStringAttr(scan.getSymName()));
  func->setAttr(kGpuKernelRoleAttr, b.getStringAttr(role));
  func->setAttr(kGpuDtypeAttr, b.getStringAttr(elemType.isF64() ? "f64" : "f32"));
  func->setAttr(kGpuBlockSizeAttr, b.getI64IntegerAttr(NT));
  func->setAttr(kGpuSharedBytesAttr, b.getI64IntegerAttr(sharedBytes));
  func->setAttr(kGpuArgsAttr, buildArgsAttr());
  return success();
}

LogicalResult mlir::fwp::lowerScansToGpu(ModuleOp module,
                                         const GpuLoweringOptions &options) {
  SmallVector<ScanOp> scans(module.getOps<ScanOp>());
  for (ScanOp scan : scans) {
    KernelEmitter emitter(scan, options);
    if (failed(emitter.emit()))
      return failure();
  }
  for (ScanOp scan : scans)
    scan.erase();
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(module.getContext()));
  return success();
}
