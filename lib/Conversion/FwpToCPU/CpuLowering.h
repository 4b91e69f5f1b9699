//===- CpuLowering.h - The CPU lowering of one scan -------------*- C++ -*-===//
//
// Internal to lib/Conversion/FwpToCPU. convert-fwp-to-cpu turns every scan
// into a function over one (batch, head): ScanLowering (ScanToLoop.cpp)
// builds the function and the time loop and hands each op of the body to
// the pattern registered for it. The patterns come in families, one file
// each, added by a populate function:
//
//   ElementwisePatterns.cpp  arithmetic, constants, sigmoid/tanh/sqrt, dot
//   FeatureMapPatterns.cpp   elu+1, sum_norm, softmax, DPFP, layer norm and
//                            their gradients
//   FastWeightPatterns.cpp   reads, writes, row scaling and row dots of the
//                            fast-weight matrices
//
// A pattern reads its operands' lowered values (cpu.in) and records its
// results' (cpu.set): vectors and scalars are SSA values, matrices memrefs,
// updated in place when the old value is dead (writableCopy).
//
//===----------------------------------------------------------------------===//
#ifndef FWP_LIB_CONVERSION_FWPTOCPU_CPULOWERING_H
#define FWP_LIB_CONVERSION_FWPTOCPU_CPULOWERING_H

#include "fwp/Dialect/Fwp/IR/FwpOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"

#include <functional>

namespace mlir::fwp::cpu {

class ScanLowering;

/// The CPU lowerings of ops, one per op type.
class CpuPatternSet {
public:
  using Pattern = std::function<LogicalResult(Operation *, ScanLowering &)>;

  /// Registers `lower` for each of `OpTys`; `lower` takes the op (or an
  /// Operation *) and the scan's lowering.
  template <typename... OpTys, typename Fn> void add(Fn lower) {
    (insert(TypeID::get<OpTys>(),
            [lower](Operation *op, ScanLowering &cpu) {
              return lower(cast<OpTys>(op), cpu);
            }),
     ...);
  }
  /// The pattern of `op`'s type, or null.
  const Pattern *lookup(Operation *op) const;

private:
  void insert(TypeID opType, Pattern pattern);
  llvm::DenseMap<TypeID, Pattern> patterns;
};

/// Arithmetic (add, sub on vectors and matrices, mul, div, neg, scale,
/// dot), constants (of matrices too), sigmoid, tanh, sqrt and their
/// gradients.
void populateElementwisePatterns(CpuPatternSet &patterns);
/// elu_plus_one, sum_norm, softmax, dpfp, layer_norm and their gradients.
void populateFeatureMapPatterns(CpuPatternSet &patterns);
/// read, read_transposed, write_sum, write_delta, scale_rows, row_dot.
void populateFastWeightPatterns(CpuPatternSet &patterns);

/// Moves every op of a scan body that makes no fast weight (vector work and
/// the reads of fast weights) to just after the last definition of its
/// operands (all fwp ops are pure, so any order of the dataflow is the same
/// step): the vector work a read needs is then ready when the matrix's
/// first op is lowered, so that op's row sweep can take the read
/// (FastWeightPatterns), and reads come before the writes of the values
/// they read, which then update in place. Writes keep their order.
void scheduleVectorWorkEarly(Block &body);

/// The memref type of a buffer argument: `[T, n]` / `[T]` for per-step
/// values, the value's own shape (or `[1]` for a scalar) otherwise.
MemRefType bufferType(Type type, bool perStep, bool offset = false);

/// The chunk length of `convert-fwp-to-cpu{chunk=auto}` for a fast weight of
/// `keys` x `values` entries of `elementBits` bits: 0 (the recurrent form)
/// below the size where the chunkwise form measured faster.
int64_t automaticChunkLength(int64_t keys, int64_t values, unsigned elementBits);

/// The one op that updates the fast weight `weight` (its
/// FastWeightUpdateOpInterface::getUpdatedWeight), null when none does,
/// failure when two do.
inline FailureOr<Operation *> soleUpdateOf(Value weight) {
  Operation *found = nullptr;
  for (Operation *user : weight.getUsers()) {
    auto update = dyn_cast<FastWeightUpdateOpInterface>(user);
    if (!update || update.getUpdatedWeight() != weight)
      continue;
    if (found)
      return failure();
    found = user;
  }
  return found;
}

/// A scan's function `@<scan>(T, seq buffers, params, states, outputs)`
/// (buffers as bufferType gives them), empty, just before the scan, with
/// the C interface and the scan's role attributes.
func::FuncOp createScanFunction(OpBuilder &b, ScanOp scan,
                                bool offsetPerStep = false);

/// Lowers a scan of several fast weights as passes over time of one weight
/// each, or of the late group (StagedScan.cpp), where every pass takes the
/// chunkwise form or a late group takes weights out of the recurrence:
/// true when it did, false (nothing built) when the scan does not split so.
FailureOr<bool> lowerInStages(ScanOp scan, const CpuPatternSet &patterns,
                              int64_t chunk);

/// What the chunkwise form of a scan (ChunkwiseScan.cpp) computes: the one
/// fast-weight state, its update chain (a decay of the rows, then one or
/// more writes: FastWeightUpdateOpInterface::getLinearUpdate) and the reads
/// of it, all with time-parallel coefficients. A step with m writes is m
/// micro-steps of the chunk (write w of step j is micro-step m j + w). The
/// scan may run backwards in time (`reverse`): the chunks then cover T from
/// its end.
struct ChunkPlan {
  /// A read of the state at each step: `result = W^T query` (fwp.read), or
  /// `result = W query` when `transposed` (fwp.read_transposed), of the
  /// weight at `position` in the step's chain: 0 the decayed one before the
  /// first write (the state itself without a decay), w + 1 the one after
  /// write w.
  struct Read {
    Value result, query;
    unsigned position = 0;
    bool transposed = false;
  };
  /// A write of the chain, in order; for the delta rule `retrieval` is the
  /// index in `reads` of the write's own retrieval (W^T key before it).
  struct Write {
    Operation *op = nullptr;
    LinearUpdate form;
    std::optional<unsigned> retrieval;
  };
  unsigned state = 0;
  Operation *decay = nullptr;
  LinearUpdate decayForm;
  /// The decay comes after the writes (the adjoint chain of a decaying
  /// weight: G <- a (.) (G + q (x) g)). The lowering then runs the step as
  /// decay-then-writes with the decay of the iteration before (none before
  /// the first), and decays the final state by the last iteration's.
  bool trailingDecay = false;
  SmallVector<Write> writes;
  /// The writes' retrievals first (in the writes' order), then the other
  /// reads.
  SmallVector<Read> reads;
  int64_t chunk = 0;
};

/// Lowers one scan to `func.func @<scan>(%T, buffers...)` with an scf.for
/// over time; the patterns lower the body's ops. `chunk`: the chunk length
/// of the chunkwise form where the scan has one (0: never; -1: chosen by
/// automaticChunkLength).
class ScanLowering {
public:
  ScanLowering(ScanOp scan, const CpuPatternSet &patterns, int64_t chunk = 0,
               bool offsetPerStep = false)
      : scan(scan), b(scan.getContext()), patterns(patterns),
        chunkOption(chunk), offsetPerStep(offsetPerStep) {}

  /// Builds the function before the scan (which the caller erases).
  LogicalResult run();

  /// The lowered value of an fwp value of the body.
  Value in(Value v) { return lowered.lookup(v); }
  /// Records the lowered value of a result.
  void set(Value result, Value value) { lowered[result] = value; }

  // Small builders.
  // Small builders.
  Value index(int64_t value) {
    return arith::ConstantIndexOp::create(b, loc, value);
  }
  Value constant(Type type, double value) {
    Type element = getElementTypeOrSelf(type);
    auto attr = b.getFloatAttr(element, value);
    if (auto vector = dyn_cast<VectorType>(type))
      return arith::ConstantOp::create(b, loc, vector,
                                       DenseElementsAttr::get(vector, attr));
    return arith::ConstantOp::create(b, loc, element, attr);
  }
  Value splat(Type like, Value scalar) {
    if (auto vector = dyn_cast<VectorType>(like))
      return vector::BroadcastOp::create(b, loc, vector, scalar);
    return scalar;
  }
  /// The sum of a vector's lanes in any order (`reassoc`): a tree of
  /// shuffles and adds instead of N dependent scalar adds.
  Value sum(Value vector) {
    return vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                       vector, arith::FastMathFlags::reassoc);
  }
  Value dot(Value x, Value y) {
    return sum(arith::MulFOp::create(b, loc, x, y));
  }
  Value exp(Value x) { return math::ExpOp::create(b, loc, x); }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value extract(Value vector, Value position) {
    return vector::ExtractOp::create(b, loc, vector, OpFoldResult(position));
  }
  Value row(Value matrix, Value e) {
    auto type = cast<MemRefType>(matrix.getType());
    return vector::LoadOp::create(
        b, loc, VectorType::get({type.getDimSize(1)}, type.getElementType()),
        matrix, ValueRange{e, index(0)});
  }
  /// Emits `for e in [0, K)` over the rows of a K x V matrix.
  template <typename Fn>
  scf::ForOp forRows(Value matrix, ValueRange inits, Fn body) {
    return forRowGroups(matrix, 1, inits, body);
  }
  /// Emits `for e in [0, K) step group` over the rows of a K x V matrix
  /// (`group` divides K); the body handles rows e .. e + group - 1.
  template <typename Fn>
  scf::ForOp forRowGroups(Value matrix, int64_t group, ValueRange inits,
                          Fn body) {
    int64_t rows = cast<MemRefType>(matrix.getType()).getDimSize(0);
    return forLoop(index(0), index(rows), group, inits, body);
  }
  /// Emits `for i in [lower, upper) step step` with loop-carried `inits`;
  /// the body returns the next values.
  template <typename Fn>
  scf::ForOp forLoop(Value lower, Value upper, int64_t step, ValueRange inits,
                     Fn body) {
    return scf::ForOp::create(
        b, loc, lower, upper, index(step), inits,
        [&](OpBuilder &nested, Location, Value i, ValueRange iters) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPoint(nested.getInsertionBlock(),
                              nested.getInsertionPoint());
          SmallVector<Value> results = body(i, iters);
          scf::YieldOp::create(b, loc, results);
        });
  }
  Value addIndex(Value i, int64_t offset) {
    if (offset == 0)
      return i;
    return arith::AddIOp::create(b, loc, i, index(offset));
  }
  // Matrices.
  /// A matrix buffer for one op, allocated once per call before the time
  /// loop (on the heap: d = 128 matrices would crowd a worker thread's stack)
  /// and freed after it.
  Value scratchMatrix(Type type) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(scratchInsertionPoint);
    Value buffer = memref::AllocOp::create(b, loc, bufferType(type, false));
    scratchBuffers.push_back(buffer);
    return buffer;
  }
  /// A [rows, n] buffer on the heap, allocated and zeroed once per call
  /// before the time loop, freed after it.
  Value zeroedScratch(MemRefType type) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(scratchInsertionPoint);
    Value buffer = memref::AllocOp::create(b, loc, type);
    scratchBuffers.push_back(buffer);
    Value zeros = constant(
        VectorType::get({type.getDimSize(1)}, type.getElementType()), 0.0);
    forRows(buffer, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      vector::StoreOp::create(b, loc, zeros, buffer, ValueRange{e, index(0)});
      return {};
    });
    return buffer;
  }
  /// A stack buffer of `size` elements for one op, allocated once per call
  /// before the time loop.
  Value scratchRow(Type element, int64_t size) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(scratchInsertionPoint);
    return memref::AllocaOp::create(b, loc, MemRefType::get({size}, element));
  }
  /// `vector` stored to a stack row, for loops that take one element per
  /// iteration: reading an element at a run-time index of a register makes
  /// LLVM write the whole register to the stack at every iteration.
  Value spill(Value vector) {
    auto type = cast<VectorType>(vector.getType());
    Value buffer = scratchRow(type.getElementType(), type.getDimSize(0));
    vector::StoreOp::create(b, loc, vector, buffer, ValueRange{index(0)});
    return buffer;
  }
  /// Element `e` of a spilled vector, broadcast to the type of `like`.
  Value splatElement(Type like, Value spilled, Value e) {
    return splat(like, memref::LoadOp::create(b, loc, spilled, ValueRange{e}));
  }
  /// Whether two ops of the body are lowered into the same loop (the
  /// prologue, the time loop, the epilogue or the function entry).
  bool sameLoop(Operation *a, Operation *b) const {
    return places.lookup(a) == places.lookup(b);
  }
  bool canOverwrite(Value matrix, Operation *writer) {
    if (readOnly.contains(lowered.lookup(matrix)))
      return false;
    for (OpOperand &use : matrix.getUses()) {
      Operation *user = use.getOwner();
      if (user == writer || user->isBeforeInBlock(writer))
        continue;
      // An output already stored at the step's start (lowerBody).
      if (isa<YieldOp>(user) && storedEarly.contains(matrix) &&
          use.getOperandNumber() >= scan.getNumStates())
        continue;
      return false;
    }
    return true;
  }
  /// The buffer `writer` may update for its result: the operand's own buffer
  /// when it is dead afterwards, else a scratch copy.
  Value writableCopy(Value matrix, Operation *writer) {
    Value buffer = lowered.lookup(matrix);
    if (canOverwrite(matrix, writer))
      return buffer;
    Value copy = scratchMatrix(matrix.getType());
    if (cast<MemRefType>(buffer.getType()).getLayout().isIdentity())
      memref::CopyOp::create(b, loc, buffer, copy);
    else
      copyRows(buffer, copy); // a step's slice of a [T, K, V] input
    return copy;
  }
  /// Step t's [K, V] matrix of a [T, K, V] buffer.
  Value stepSlice(Value buffer, Value t) {
    auto type = cast<MemRefType>(buffer.getType());
    int64_t rows = type.getDimSize(1), cols = type.getDimSize(2);
    auto resultType =
        cast<MemRefType>(memref::SubViewOp::inferRankReducedResultType(
            {rows, cols}, type,
            ArrayRef<OpFoldResult>{t, b.getIndexAttr(0), b.getIndexAttr(0)},
            ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(rows),
                                   b.getIndexAttr(cols)},
            ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1),
                                   b.getIndexAttr(1)}));
    return memref::SubViewOp::create(
        b, loc, resultType, buffer,
        ArrayRef<OpFoldResult>{t, b.getIndexAttr(0), b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(rows),
                               b.getIndexAttr(cols)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1),
                               b.getIndexAttr(1)});
  }
  /// target[e, :] = source[e, :] for every row (any strided layouts).
  void copyRows(Value source, Value target) {
    // From a state kept in registers, row by row without a loop: LLVM would
    // make the loop a call to memcpy and spill the registers around it.
    if (registerStates.contains(source)) {
      int64_t rows = cast<MemRefType>(source.getType()).getDimSize(0);
      for (int64_t e = 0; e < rows; ++e)
        vector::StoreOp::create(b, loc, row(source, index(e)), target,
                                ValueRange{index(e), index(0)});
      return;
    }
    forRows(source, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      vector::StoreOp::create(b, loc, row(source, e), target,
                              ValueRange{e, index(0)});
      return {};
    });
  }

  ScanOp scan;
  OpBuilder b;
  Location loc = scan.getLoc();

private:
  /// Which part of the function computes a value of the body: the entry
  /// (params and what depends on them alone), the prologue loop, the time
  /// loop or the epilogue loop (`fwp.phase`, TimeParallel.h). Seq inputs
  /// are read from their buffers by every loop.
  enum class Place { Input, Entry, Prologue, Core, Epilogue };
  Place placeOf(Value value);
  /// The loop that stores `output` (a yielded output): its own for the
  /// prologue's and epilogue's values, else the time loop.
  Place storerOf(Value output);
  bool usedIn(Value value, Place place);
  /// Step t of a per-step buffer ([T, n] or [T]).
  Value loadStep(Value buffer, Type type, Value t);
  /// Prefetches the vector seq inputs of the step `distance` steps after
  /// `t` in the scan's direction (clamped to [0, count)).
  void prefetchStepInputs(Value t, Value count, int64_t distance);
  void storeStep(Value value, Value buffer, Value t);
  /// Makes the seq inputs and the values of other loops that the ops of
  /// `place` use available at step t.
  void loadStepInputs(Place place, Value t);
  /// Stores the values of `place` that later loops read.
  void storeStepResults(Place place, Value t);
  /// Allocates the per-step buffers through which the loops pass values.
  /// `epilogueInTimeLoop`: the epilogue runs in the time loop's body after
  /// the step (the chunkwise form), so the step's values need no buffer.
  void allocateStepBuffers(Value count, bool epilogueInTimeLoop);
  /// One step of the prologue or the epilogue: loads, ops, outputs.
  LogicalResult lowerTimeParallelStep(Place place, Value t);
  /// Whether any op of the body runs in `place`.
  bool hasOpsIn(Place place) const;
  /// A loop over the iterations [first, end) lowering `place`'s ops of
  /// each (nothing where `place` has none).
  LogicalResult lowerTimeParallelSteps(Place place, Value first, Value end,
                                       Value count);
  /// The step of time of loop iteration i (T - 1 - i backwards in time).
  Value stepOfIteration(Value i, Value count);
  /// Steps per block of the recurrent time loop (each block runs its
  /// prologue, its steps, then its epilogue).
  static constexpr int64_t kTimeBlock = 16;
  /// The x86 targets' cache line: one prefetch per line of a row.
  static constexpr int64_t kCacheLineBytes = 64;
  /// Matrix states run the recurrent time loop in a local copy that LLVM
  /// keeps in registers while the scan's matrices (params, matrices per
  /// step, the states kept) take up to this size (16 AVX-512 registers,
  /// half the register file: the step's vectors need the rest).
  static constexpr int64_t kRegisterStateBytes = 1024;
  /// The local copies of the matrix states that fit in registers
  /// (kRegisterStateBytes): for each, the argument buffer and its copy,
  /// which then stands for the state in `stateBuffers` (and is in
  /// `registerStates`).
  SmallVector<std::pair<Value, Value>> keepStatesInRegisters();
  /// The local copies of keepStatesInRegisters.
  llvm::DenseSet<Value> registerStates;
  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerBody(Value t, ValueRange vectorStates,
                          SmallVectorImpl<Value> &nextVectorStates);
  /// The time loop of the recurrent form, after the prologue.
  LogicalResult lowerTimeLoop(Value count, ValueRange initialVectorStates,
                              SmallVectorImpl<Value> &finalVectorStates);

  /// The chunkwise form (ChunkwiseScan.cpp): the plan when the scan has one
  /// and `chunkOption` asks for it; the chunk loop that replaces the time
  /// loop, returning the vector states' final values.
  std::optional<ChunkPlan> planChunkwise();
  LogicalResult lowerChunkwise(const ChunkPlan &plan, Value count,
                               ValueRange initialVectorStates,
                               SmallVectorImpl<Value> &finalVectorStates);
  /// The value of a time-parallel fwp value (seq input, entry or prologue
  /// value) at step t.
  Value stepValue(Value value, Value t);
  /// The [T, ...] buffer that holds a time-parallel value step by step (a
  /// seq input's or a prologue value's); null for an entry value.
  Value stepBufferOf(Value value);

  const CpuPatternSet &patterns;
  int64_t chunkOption;
  /// The per-step buffers are views at any offset (a staged scan's passes,
  /// called on a block of steps at a time).
  bool offsetPerStep = false;
  /// fwp value -> lowered value (vector/scalar SSA value, or a memref).
  llvm::DenseMap<Value, Value> lowered;
  llvm::DenseSet<Value> readOnly;
  /// Matrix states whose value before the step is an output (the tape of
  /// a stored or checkpointed backward), stored to it when the step starts.
  llvm::DenseSet<Value> storedEarly;
  Operation *scratchInsertionPoint = nullptr;
  SmallVector<Value> scratchBuffers;

  SmallVector<Value> seqBuffers, paramBuffers, stateBuffers, outputBuffers;
  llvm::DenseMap<Operation *, Place> places;
  /// fwp value -> the [T, ...] buffer another loop reads it from (in the
  /// body's order, so that the emitted code is deterministic).
  llvm::MapVector<Value, Value> stepBuffers;
};

} // namespace mlir::fwp::cpu

#endif // FWP_LIB_CONVERSION_FWPTOCPU_CPULOWERING_H
