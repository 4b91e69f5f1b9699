//===- ChunkwiseScan.cpp - The chunkwise form of a linear scan ------------===//
//
// A scan whose one fast weight W (K x V) is updated linearly, with
// coefficients from the time-parallel prologue, can run chunk by chunk
// instead of step by step (docs/compiler.md, "The chunkwise form"). Each op
// of the update chain says how it is linear (FastWeightUpdateOpInterface::
// getLinearUpdate): a decay of the rows by a_t, then a write of k_t (x) w_t
// with w_t = v_t (sum) or b_t (v_t - (D_t W)^T k_t) (delta rule). Within a
// chunk that starts from S, with lambda_j the product of the chunk's decays
// up to step j and p_i^(j) = (prod_{i<l<=j} a_l) k_i the key of step i as
// decayed up to step j,
//
//   (D_j W_{j-1})^T x = S^T (lambda_j x) + sum_{i<j}  (x . p_i^(j)) w_i
//          W_j^T    x = S^T (lambda_j x) + sum_{i<=j} (x . p_i^(j)) w_i
//   W_n             = diag(lambda_n) S   + sum_i p_i^(n) (x) w_i
//
// and the transposed reads (fwp.read_transposed, x a V-vector)
//
//   D_j W_{j-1} x = lambda_j (.) (S x) + sum_{i<j}  p_i^(j) (w_i . x)
//          W_j  x = lambda_j (.) (S x) + sum_{i<=j} p_i^(j) (w_i . x)
//
// so a chunk costs one blocked pass over S for all its steps' reads (every
// row of S is loaded once per block of queries instead of once per step),
// the steps' interactions (which solve the delta rule's triangular system
// as they go), and one pass that writes the new state. The decayed keys are
// products of the decays themselves, never quotients of cumulative products
// (which overflow for strong decays). Without a decay the keys do not change
// with j: the retrievals' products with the chunk's keys are computed for
// all steps before the step loop (which then only solves the triangular
// system), and the reads no write depends on take the chunk's steps at once
// after it: the masked [C, C m] products of their queries with the keys (for
// a transposed read the [C m, C] products of the writes with the queries),
// then one matrix-style pass over the writes (keys), no horizontal sums.
// Everything else of the step (vector states, ops on the reads) then runs
// step by step as before. A scan backwards in time (`reverse`, as the
// backward scans are) takes its steps in its own order: step j of the chunk
// that starts at iteration s is step T - 1 - (s + j) of time.
//
// A step with m writes (a decay, then write_sum / write_delta in any mix)
// is m micro-steps of the chunk: write w of step j is micro-step m j + w,
// the sums above run over micro-steps i, a write's retrieval and a read at
// position p of the step (0 before its first write, w + 1 after write w)
// over i < m j + w resp. i < m j + p, and the decay (once per step, before
// its writes) scales the keys of all earlier micro-steps.
//
//===----------------------------------------------------------------------===//

#include "CpuLowering.h"

using namespace mlir;
using namespace mlir::fwp;
using namespace mlir::fwp::cpu;

int64_t mlir::fwp::cpu::automaticChunkLength(int64_t keys, int64_t values,
                                             unsigned elementBits) {
  // The chunkwise form does as many multiply-adds as the recurrent one (for
  // the delta rule a few more), but passes over the state once per chunk
  // instead of once per step. That pays once the state no longer fits the
  // L1 data cache (32-48 KiB on current x86 cores) and every pass of the
  // recurrent form streams it from L2. Measured with fwp-bench-strategies,
  // one thread, delta_net's forward (docs/benchmarks.md, "The chunkwise
  // form"): d = 32 and 64 (4 and 16 KiB) are 1.1-1.7x slower chunkwise,
  // d = 128 (64 KiB) 2.0x faster with chunks of 8 or 16.
  int64_t bytes = keys * values * elementBits / 8;
  return bytes > 48 * 1024 ? 16 : 0;
}

std::optional<ChunkPlan> ScanLowering::planChunkwise() {
  if (chunkOption == 0)
    return std::nullopt;
  // One fast-weight state; no other matrix in the body.
  std::optional<unsigned> matrixState;
  for (auto [i, arg] : llvm::enumerate(scan.getStateArgs()))
    if (isa<FastWeightType>(arg.getType())) {
      if (matrixState)
        return std::nullopt;
      matrixState = i;
    }
  if (!matrixState)
    return std::nullopt;
  auto isMatrix = [](Value v) { return isa<FastWeightType>(v.getType()); };
  if (llvm::any_of(scan.getSeqArgs(), isMatrix) ||
      llvm::any_of(scan.getParamArgs(), isMatrix))
    return std::nullopt;

  ChunkPlan plan;
  plan.state = *matrixState;
  // The update chain: a decay, then one or more writes.
  SmallVector<Value> chain{scan.getStateArgs()[*matrixState]};
  SmallVector<Operation *> chainOps;
  while (true) {
    FailureOr<Operation *> found = soleUpdateOf(chain.back());
    if (failed(found))
      return std::nullopt;
    Operation *next = *found;
    if (!next)
      break;
    auto update = cast<FastWeightUpdateOpInterface>(next);
    std::optional<LinearUpdate> form = update.getLinearUpdate();
    if (!form)
      return std::nullopt;
    if (form->rowScale) {
      if (plan.decay)
        return std::nullopt; // a second decay
      plan.decay = next;
      plan.decayForm = *form;
      plan.trailingDecay = !plan.writes.empty();
    } else {
      if (plan.trailingDecay)
        return std::nullopt; // a write after a trailing decay
      plan.writes.push_back({next, *form, std::nullopt});
    }
    chainOps.push_back(next);
    chain.push_back(update.getUpdateResult());
  }
  if (plan.writes.empty() ||
      scan.getYield().getValues()[*matrixState] != chain.back())
    return std::nullopt;
  for (auto [w, write] : llvm::enumerate(plan.writes))
    if (write.form.rate) {
      write.retrieval = plan.reads.size();
      plan.reads.push_back(
          {write.form.retrieved, write.form.key, static_cast<unsigned>(w)});
    }

  // Every other use of the chain is a read with a time-parallel query. The
  // chain's value at index i is at position i - 1 of the step's micro-steps
  // after a decay (the state itself is read by none), i without one or
  // with a trailing decay (whose result is read by none).
  for (auto [index, value] : llvm::enumerate(chain)) {
    for (OpOperand &use : value.getUses()) {
      Operation *user = use.getOwner();
      if (llvm::is_contained(chainOps, user)) {
        if (cast<FastWeightUpdateOpInterface>(user).getUpdatedWeight() ==
            use.get())
          continue;
        return std::nullopt;
      }
      if (isa<YieldOp>(user)) {
        if (value == chain.back() && use.getOperandNumber() == *matrixState)
          continue;
        return std::nullopt; // the matrix as an output
      }
      if (plan.trailingDecay ? index + 1 == chain.size()
                             : index == 0 && plan.decay)
        return std::nullopt; // a read before the decay, or after a trailing one
      unsigned position = plan.decay && !plan.trailingDecay ? index - 1 : index;
      if (auto read = dyn_cast<ReadOp>(user))
        plan.reads.push_back({read.getResult(), read.getQuery(), position});
      else if (auto read = dyn_cast<ReadTransposedOp>(user))
        plan.reads.push_back({read.getResult(), read.getValue(), position,
                              /*transposed=*/true});
      else
        return std::nullopt;
    }
  }
  auto timeParallel = [&](Value v) {
    Place place = placeOf(v);
    return place == Place::Input || place == Place::Entry ||
           place == Place::Prologue;
  };
  SmallVector<Value> coefficients;
  for (const ChunkPlan::Write &write : plan.writes) {
    coefficients.push_back(write.form.key);
    coefficients.push_back(write.form.value);
    if (write.form.rate)
      coefficients.push_back(write.form.rate);
  }
  if (plan.decay)
    coefficients.push_back(plan.decayForm.rowScale);
  for (const ChunkPlan::Read &read : plan.reads)
    coefficients.push_back(read.query);
  if (!llvm::all_of(coefficients, timeParallel))
    return std::nullopt;

  auto type = cast<FastWeightType>(chain.front().getType());
  plan.chunk = chunkOption > 0
                   ? chunkOption
                   : automaticChunkLength(type.getKeyDim(), type.getValueDim(),
                                          type.getElementType()
                                              .getIntOrFloatBitWidth());
  if (plan.chunk == 0)
    return std::nullopt;
  return plan;
}

Value ScanLowering::stepValue(Value value, Value t) {
  if (placeOf(value) == Place::Entry)
    return lowered.lookup(value);
  return loadStep(stepBufferOf(value), value.getType(), t);
}

Value ScanLowering::stepBufferOf(Value value) {
  switch (placeOf(value)) {
  case Place::Entry:
    return Value();
  case Place::Input:
    return seqBuffers[cast<BlockArgument>(value).getArgNumber()];
  default:
    return stepBuffers.lookup(value);
  }
}

namespace {
/// Builders of the chunk's loops and row buffers.
struct ChunkBuilder {
  ScanLowering &cpu;
  OpBuilder &b;
  Location loc;
  /// Elements per 512-bit vector register.
  int64_t lanes;

  template <typename Fn>
  scf::ForOp loop(Value lower, Value upper, int64_t step, ValueRange inits,
                  Fn body) {
    return cpu.forLoop(lower, upper, step, inits, body);
  }
  Value load(VectorType type, Value buffer, Value j) {
    return vector::LoadOp::create(b, loc, type, buffer,
                                  ValueRange{j, cpu.index(0)});
  }
  void store(Value value, Value buffer, Value j) {
    vector::StoreOp::create(b, loc, value, buffer, ValueRange{j, cpu.index(0)});
  }
  /// Element [j, e] of a [C, n] buffer broadcast to `like`.
  Value splatAt(Type like, Value buffer, Value j, Value e) {
    return cpu.splat(like, memref::LoadOp::create(b, loc, buffer,
                                                  ValueRange{j, e}));
  }
  Value fma(Value a, Value x, Value acc) {
    return vector::FMAOp::create(b, loc, a, x, acc);
  }
  /// inits[r] + sum_{i < count} a[first + r, i] rhs[i, :] for each r, with
  /// `rhs` a [count, n] buffer: one pass over the rows of `rhs` for
  /// inits.size() rows of `a`.
  /// `aRow` maps a row of `a` to its index in the buffer (identity if
  /// null).
  /// `column`: the first column of the rows of `rhs` (0 if null).
  SmallVector<Value> rowsTimes(Value a, Value first, Value rhs, Value count,
                               ValueRange inits,
                               function_ref<Value(Value)> aRow = nullptr,
                               Value column = nullptr) {
    auto rowType = cast<VectorType>(inits.front().getType());
    SmallVector<Value> aRows;
    for (size_t r = 0; r < inits.size(); ++r) {
      Value row = cpu.addIndex(first, r);
      aRows.push_back(aRow ? aRow(row) : row);
    }
    scf::ForOp sums = loop(
        cpu.index(0), count, 1, inits,
        [&](Value i, ValueRange acc) -> SmallVector<Value> {
          Value row = vector::LoadOp::create(
              b, loc, rowType, rhs,
              ValueRange{i, column ? column : cpu.index(0)});
          SmallVector<Value> next;
          for (auto [r, partial] : llvm::enumerate(acc))
            next.push_back(fma(splatAt(rowType, a, aRows[r], i), row, partial));
          return next;
        });
    return SmallVector<Value>(sums.getResults().begin(),
                              sums.getResults().end());
  }
  /// Column j of a transposed [n, C] buffer = `vector` (n elements).
  void storeColumn(Value vector, Value buffer, Value j) {
    Value elements = cpu.spill(vector);
    cpu.forRows(buffer, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      memref::StoreOp::create(
          b, loc, memref::LoadOp::create(b, loc, elements, ValueRange{e}),
          buffer, ValueRange{e, j});
      return {};
    });
  }
  /// target[at(e)] = source[e, j] for every row e of `source`, an element
  /// per store (where the shapes are not whole tiles for storeTransposed).
  void copyColumn(Value source, Value j, Value target,
                  function_ref<SmallVector<Value>(Value e)> at) {
    cpu.forRows(source, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      memref::StoreOp::create(
          b, loc, memref::LoadOp::create(b, loc, source, ValueRange{e, j}),
          target, at(e));
      return {};
    });
  }
  /// Whether storeTransposed takes `rows` x `n`: whole tiles of lanes x lanes.
  bool tiles(int64_t rows, int64_t n) const {
    return rows % lanes == 0 && n % lanes == 0;
  }
  /// target[c, r] = rowOf(first, q)[c] for the rows r = first + q < `rows`
  /// (`first` a multiple of the lanes, q < lanes) and c < n, target being
  /// [n, rows]: lanes x lanes tiles transposed in registers and stored a
  /// vector per tile row, instead of one element store per entry (which the
  /// back end emits as a scatter per vector, or an extract per element).
  /// `rowOf` must be valid for every r < rows.
  void storeTransposed(int64_t rows, int64_t n,
                       function_ref<Value(Value first, int64_t q)> rowOf,
                       Value target) {
    loop(cpu.index(0), cpu.index(rows), lanes, {},
         [&](Value first, ValueRange) -> SmallVector<Value> {
           for (int64_t column = 0; column < n; column += lanes) {
             SmallVector<Value> tile;
             for (int64_t q = 0; q < lanes; ++q)
               tile.push_back(vector::ExtractStridedSliceOp::create(
                   b, loc, rowOf(first, q), ArrayRef<int64_t>{column},
                   ArrayRef<int64_t>{lanes}, ArrayRef<int64_t>{1}));
             transposeTile(tile);
             for (int64_t c = 0; c < lanes; ++c)
               vector::StoreOp::create(
                   b, loc, tile[c], target,
                   ValueRange{cpu.index(column + c), first});
           }
           return {};
         });
  }
  /// Transposes `tile` (lanes vectors of lanes elements) in log2(lanes)
  /// rounds of two-vector shuffles: the round of half-size h swaps the
  /// off-diagonal h x h blocks of every 2h x 2h block.
  void transposeTile(SmallVectorImpl<Value> &tile) {
    int64_t n = tile.size();
    for (int64_t h = n / 2; h >= 1; h /= 2) {
      SmallVector<int64_t> low, high;
      for (int64_t l = 0; l < n; ++l) {
        bool upper = l & h;
        low.push_back(upper ? n + l - h : l);
        high.push_back(upper ? n + l : l + h);
      }
      for (int64_t r = 0; r < n; ++r) {
        if (r & h)
          continue;
        Value top = tile[r], bottom = tile[r + h];
        tile[r] = vector::ShuffleOp::create(b, loc, top, bottom, low);
        tile[r + h] = vector::ShuffleOp::create(b, loc, top, bottom, high);
      }
    }
  }
  /// A [rows, n] scratch buffer on the heap, zeroed once per call (rows past
  /// a short last chunk are computed on but never used).
  Value scratch(int64_t rows, int64_t n, Type element) {
    return cpu.zeroedScratch(MemRefType::get({rows, n}, element));
  }
};
} // namespace

LogicalResult
ScanLowering::lowerChunkwise(const ChunkPlan &plan, Value count,
                             ValueRange initialVectorStates,
                             SmallVectorImpl<Value> &finalVectorStates) {
  loc = scan.getLoc();
  Value state = stateBuffers[plan.state];
  auto stateType = cast<MemRefType>(state.getType());
  int64_t keys = stateType.getDimSize(0), values = stateType.getDimSize(1);
  Type element = stateType.getElementType();
  ChunkBuilder cb{*this, b, loc, 512 / element.getIntOrFloatBitWidth()};
  auto keyRow = VectorType::get({keys}, element);
  auto valueRow = VectorType::get({values}, element);
  int64_t chunk = plan.chunk;
  // Micro-steps per step: write w of step j is micro-step micro j + w.
  int64_t micro = plan.writes.size();
  // The writes' retrievals come first in plan.reads.
  size_t retrievals = llvm::count_if(
      plan.writes, [](const ChunkPlan::Write &w) { return w.retrieval; });

  // Query blocks of the pass over S: as many queries as keep their
  // accumulators (rows of V) within 16 vector registers.
  int64_t lanes = 512 / element.getIntOrFloatBitWidth();
  int64_t registersPerRow = (values + lanes - 1) / lanes;
  int64_t block = 1;
  while (block * 2 * registersPerRow <= 16 && block * 2 <= chunk &&
         chunk % (block * 2) == 0)
    block *= 2;
  // A read's pass over S for rows of several vector registers: slabs of
  // two registers' columns (one where the row has two), `columnBlock`
  // queries per pass.
  int64_t columnWidth = values;
  for (int64_t width : {2 * lanes, lanes})
    if (width < values && values % width == 0) {
      columnWidth = width;
      break;
    }
  auto columnType = VectorType::get({columnWidth}, element);
  int64_t columnRegisters = (columnWidth + lanes - 1) / lanes;
  int64_t columnBlock = 1;
  while (columnBlock * 2 * columnRegisters <= 16 && columnBlock * 2 <= chunk &&
         chunk % (columnBlock * 2) == 0)
    columnBlock *= 2;
  int64_t rowBlock = 1;
  while (rowBlock * 2 * registersPerRow <= 16 && keys % (rowBlock * 2) == 0 &&
         rowBlock < 4)
    rowBlock *= 2;

  // Per chunk: the decayed keys p_i (transposed) and the writes w_i of its
  // micro-steps, and per read the decayed queries lambda_j x_j and the
  // results. A transposed read keeps its queries x_j transposed ([V, C])
  // and S x_j as the columns of a [K, C] buffer (sTimesQueries); the
  // transposed reads need lambda_j and the decayed keys p_i once more, as
  // rows ([C m, K]).
  int64_t microSteps = chunk * micro;
  Value keysT = cb.scratch(keys, microSteps, element);
  // Transposed copies of the chunk's steps in register tiles (below) where
  // the shapes are whole tiles, else an element per store.
  bool tiledQueries = cb.tiles(chunk, values);
  bool tiledKeys = cb.tiles(microSteps, keys) && cb.lanes % micro == 0;
  auto chunkRow = VectorType::get({chunk}, element);
  auto microRow = VectorType::get({microSteps}, element);
  Value writesBuffer = cb.scratch(microSteps, values, element);
  SmallVector<Value> queryBuffers, resultBuffers, sTimesQueries;
  // Without a decay a read's queries are the rows of their own [T, K]
  // buffer (a seq input or a prologue value): no copy per chunk; the rows
  // are then found by step (directQueries).
  SmallVector<bool> directQueries;
  bool anyTransposed = false;
  for (const ChunkPlan::Read &read : plan.reads) {
    anyTransposed |= read.transposed;
    Value source = plan.decay || read.transposed ? Value()
                                                 : stepBufferOf(read.query);
    directQueries.push_back(static_cast<bool>(source));
    queryBuffers.push_back(read.transposed ? cb.scratch(values, chunk, element)
                           : source        ? source
                                           : cb.scratch(chunk, keys, element));
    resultBuffers.push_back(
        cb.scratch(chunk, read.transposed ? keys : values, element));
    sTimesQueries.push_back(read.transposed ? cb.scratch(keys, chunk, element)
                                            : Value());
  }
  Value lambdas = plan.decay && anyTransposed
                      ? cb.scratch(chunk, keys, element)
                      : Value();
  // Without a decay the reads other than the retrievals run after the step
  // loop, blocked (phase 3b); their products with the chunk's keys (writes
  // for a transposed read) go to a [C, C m] ([C m, C]) buffer.
  bool blockedReads = !plan.decay;
  Value keyRows = anyTransposed && !blockedReads
                      ? cb.scratch(microSteps, keys, element)
                      : Value();
  Value readOverlaps = blockedReads && plan.reads.size() > retrievals
                           ? cb.scratch(chunk, microSteps, element)
                           : Value();
  SmallVector<Value> retrievalOverlaps;
  if (blockedReads)
    for (size_t r = 0; r < retrievals; ++r)
      retrievalOverlaps.push_back(cb.scratch(chunk, microSteps, element));
  Value writeOverlaps = blockedReads && anyTransposed
                            ? cb.scratch(microSteps, chunk, element)
                            : Value();
  // Rows of S per pass of a transposed read's products: 8 independent
  // accumulators of a chunk's row (one register at C = 16), enough to hide
  // the FMA latency on two FMA ports.
  int64_t rowGroup = 8;
  while (keys % rowGroup != 0)
    rowGroup /= 2;
  Value lambdaRow = scratchRow(element, keys);
  auto rowOf = [](Value buffer) {
    auto type = cast<MemRefType>(buffer.getType());
    return VectorType::get({type.getDimSize(1)}, type.getElementType());
  };

  // The keep-mask of a product (i, j) of the blocked reads: m j + p > i.
  auto keep = [&](Value jTimesMicroPlusP, Value i) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt,
                                 jTimesMicroPlusP, i);
  };
  auto iotaTimes = [&](int64_t n, int64_t scale, int64_t offset) {
    SmallVector<int64_t> entries;
    for (int64_t i = 0; i < n; ++i)
      entries.push_back(scale * i + offset);
    auto type = VectorType::get({n}, b.getI64Type());
    return arith::ConstantOp::create(b, loc,
                                     DenseIntElementsAttr::get(type, entries));
  };
  auto splatIndex = [&](int64_t n, Value i) -> Value {
    Value scalar = arith::IndexCastOp::create(b, loc, b.getI64Type(), i);
    return vector::BroadcastOp::create(
        b, loc, VectorType::get({n}, b.getI64Type()), scalar);
  };
  // Rows per pass of the blocked reads' products: about 8 accumulator
  // registers.
  int64_t microRegisters = (microSteps + lanes - 1) / lanes;
  int64_t group = 8;
  while (group > 1 && group * microRegisters > 8)
    group /= 2;
  while (microSteps % group != 0 || chunk % group != 0)
    group /= 2;
  // Row j of the masked products X K^T of the queries x_j ([C, K] rows)
  // with the chunk's keys, sum_e x_j[e] keysT[e, :], kept for the
  // micro-steps i < m j + position.
  auto maskedKeyProducts = [&](Value queries, Value overlaps,
                               unsigned position,
                               function_ref<Value(Value)> queryRow) {
    Value bounds = iotaTimes(microSteps, 1, 0);
    Value zeros = constant(microRow, 0.0);
    forRowGroups(overlaps, group, {},
                 [&](Value first, ValueRange) -> SmallVector<Value> {
                   SmallVector<Value> inits(group, zeros);
                   SmallVector<Value> sums =
                       cb.rowsTimes(queries, first, keysT, index(keys), inits,
                                    queryRow);
                   for (int64_t q = 0; q < group; ++q) {
                     Value j = addIndex(first, q);
                     Value end = arith::AddIOp::create(
                         b, loc, arith::MulIOp::create(b, loc, j, index(micro)),
                         index(position));
                     Value mask = keep(splatIndex(microSteps, end), bounds);
                     cb.store(
                         arith::SelectOp::create(b, loc, mask, sums[q], zeros),
                         overlaps, j);
                   }
                   return {};
                 });
  };

  Value zero = index(0);
  LogicalResult status = success();
  scf::ForOp chunks = cb.loop(
      zero, count, chunk, initialVectorStates,
      [&](Value start, ValueRange vectorStates) -> SmallVector<Value> {
        Value length = arith::MinSIOp::create(
            b, loc, index(chunk), arith::SubIOp::create(b, loc, count, start));
        // Step j of the chunk is iteration start + j of the scan: step
        // start + j of time, or T - 1 - (start + j) backwards in time (the
        // chunks then cover T from its end, a short last chunk at its start).
        auto stepOf = [&](Value j) -> Value {
          return stepOfIteration(arith::AddIOp::create(b, loc, start, j),
                                 count);
        };
        Value end = arith::AddIOp::create(b, loc, start, length);
        // The decay before step j's writes: its own, or with a trailing
        // decay that of the iteration before (none before the first).
        auto decayOf = [&](Value j) -> Value {
          if (!plan.trailingDecay)
            return stepValue(plan.decayForm.rowScale, stepOf(j));
          Value i = arith::AddIOp::create(b, loc, start, j);
          Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                              i, zero);
          Value before = arith::MaxSIOp::create(
              b, loc, arith::SubIOp::create(b, loc, i, index(1)), zero);
          Value factors = stepValue(plan.decayForm.rowScale,
                                    stepOfIteration(before, count));
          return arith::SelectOp::create(b, loc, first, constant(keyRow, 1.0),
                                         factors);
        };

        // The prologue (the state-independent work of the steps,
        // TimeParallel.h) runs chunk by chunk, before the chunk's phases, and
        // the epilogue step by step after them (phase 5): the chunk's rows
        // of the [T, n] buffers between them stay in the caches (over all of
        // T they outgrow L2 at d = 128).
        if (failed(lowerTimeParallelSteps(Place::Prologue, start, end, count)))
          status = failure();
        if (failed(status))
          return SmallVector<Value>(vectorStates.begin(), vectorStates.end());

        // 1. lambda_j and the decayed queries lambda_j x_j.
        Value ones = constant(keyRow, 1.0);
        scf::ForOp decays = cb.loop(
            zero, length, 1, ValueRange{ones},
            [&](Value j, ValueRange lambda) -> SmallVector<Value> {
              Value t = stepOf(j);
              Value current = lambda.front();
              if (plan.decay)
                current = mul(current, decayOf(j));
              for (auto [read, buffer, direct] :
                   llvm::zip(plan.reads, queryBuffers, directQueries)) {
                if (direct)
                  continue;
                Value x = stepValue(read.query, t);
                if (!read.transposed) {
                  cb.store(plan.decay ? mul(current, x) : x, buffer, j);
                  continue;
                }
                if (!tiledQueries)
                  cb.storeColumn(x, buffer, j);
              }
              if (lambdas)
                cb.store(current, lambdas, j);
              // Without a decay the keys go to keysT here (phase 2b).
              if (blockedReads && !tiledKeys)
                for (auto [w, write] : llvm::enumerate(plan.writes))
                  cb.storeColumn(stepValue(write.form.key, t), keysT,
                                 micro == 1
                                     ? j
                                     : addIndex(arith::MulIOp::create(
                                                    b, loc, j, index(micro)),
                                                w));
              return {current};
            });
        Value lambdaEnd = decays.getResult(0);
        // The transposed queries and keys in tiles: step j's row, j clamped
        // to the chunk (the columns past a short chunk are never used).
        auto clampedStep = [&](Value j) {
          return stepOf(arith::MinSIOp::create(
              b, loc, j, arith::SubIOp::create(b, loc, length, index(1))));
        };
        // The buffer row of read r's query of step j.
        auto queryRow = [&](size_t r) -> function_ref<Value(Value)> {
          if (!directQueries[r])
            return nullptr;
          return clampedStep;
        };
        if (tiledQueries)
          for (auto [read, buffer] : llvm::zip(plan.reads, queryBuffers))
            if (read.transposed)
              cb.storeTransposed(
                  chunk, values,
                  [&](Value first, int64_t q) {
                    return stepValue(read.query,
                                     clampedStep(addIndex(first, q)));
                  },
                  buffer);
        if (blockedReads && tiledKeys)
          cb.storeTransposed(
              microSteps, keys,
              [&](Value first, int64_t q) {
                // Micro-step first + q: write q % m of step first / m + q / m
                // (first is a multiple of the lanes, so of m).
                Value firstStep =
                    micro == 1 ? first
                               : arith::DivUIOp::create(b, loc, first,
                                                        index(micro))
                                     .getResult();
                const ChunkPlan::Write &write = plan.writes[q % micro];
                return stepValue(write.form.key,
                                 clampedStep(addIndex(firstStep, q / micro)));
              },
              keysT);

        // 2. S^T (lambda_j x_j) for every read and step, `block` steps per
        // pass over the rows of S; for a transposed read S x_j for all the
        // chunk's steps at once (lambda_j applies to the result): row e of
        // S times the transposed queries, sum_m S[e, m] X^T[m, :], a vector
        // of the chunk's steps (no horizontal sums), `rowGroup` rows of S
        // per pass over the queries.
        for (auto [r, read, queries, results, products] :
             llvm::enumerate(plan.reads, queryBuffers, resultBuffers,
                             sTimesQueries)) {
          // The buffer rows of the queries first + q.
          auto queryRows = [&, r = r](Value first, int64_t count) {
            function_ref<Value(Value)> rowOf = queryRow(r);
            SmallVector<Value> rows;
            for (int64_t q = 0; q < count; ++q) {
              Value j = addIndex(first, q);
              rows.push_back(rowOf ? rowOf(j) : j);
            }
            return rows;
          };
          if (read.transposed) {
            forRowGroups(
                state, rowGroup, {},
                [&](Value first, ValueRange) -> SmallVector<Value> {
                  SmallVector<Value> inits(rowGroup, constant(chunkRow, 0.0));
                  SmallVector<Value> sums = cb.rowsTimes(
                      state, first, queries, index(values), inits);
                  for (int64_t r = 0; r < rowGroup; ++r)
                    cb.store(sums[r], products, addIndex(first, r));
                  return {};
                });
            continue;
          }
          if (columnWidth < values) {
            // Slabs of `columnWidth` columns of S: a slab stays in L1 over
            // the chunk's query blocks, so S streams from L2 once per read.
            cb.loop(
                zero, index(values), columnWidth, {},
                [&](Value c, ValueRange) -> SmallVector<Value> {
                  cb.loop(
                      zero, length, columnBlock, {},
                      [&](Value first, ValueRange) -> SmallVector<Value> {
                        SmallVector<Value> inits(columnBlock,
                                                 constant(columnType, 0.0));
                        SmallVector<Value> rowsOfQueries =
                            queryRows(first, columnBlock);
                        scf::ForOp rows = forRows(
                            state, inits,
                            [&](Value e, ValueRange acc) -> SmallVector<Value> {
                              Value row = vector::LoadOp::create(
                                  b, loc, columnType, state, ValueRange{e, c});
                              SmallVector<Value> next;
                              for (int64_t q = 0; q < columnBlock; ++q)
                                next.push_back(
                                    cb.fma(cb.splatAt(columnType, queries,
                                                      rowsOfQueries[q], e),
                                           row, acc[q]));
                              return next;
                            });
                        for (int64_t q = 0; q < columnBlock; ++q)
                          vector::StoreOp::create(
                              b, loc, rows.getResult(q), results,
                              ValueRange{addIndex(first, q), c});
                        return {};
                      });
                  return {};
                });
            continue;
          }
          cb.loop(zero, length, block, {},
                  [&](Value first, ValueRange) -> SmallVector<Value> {
                    SmallVector<Value> inits(block, constant(valueRow, 0.0));
                    SmallVector<Value> rowsOfQueries = queryRows(first, block);
                    scf::ForOp rows = forRows(
                        state, inits,
                        [&](Value e, ValueRange acc) -> SmallVector<Value> {
                          Value row = this->row(state, e);
                          SmallVector<Value> next;
                          for (int64_t q = 0; q < block; ++q)
                            next.push_back(cb.fma(
                                cb.splatAt(valueRow, queries, rowsOfQueries[q],
                                           e),
                                row, acc[q]));
                          return next;
                        });
                    for (int64_t q = 0; q < block; ++q)
                      cb.store(rows.getResult(q), results, addIndex(first, q));
                    return {};
                  });
        }

        // 2b. Without a decay, the retrievals' products with the chunk's
        // keys, all steps at once (the keys are inputs).
        if (blockedReads)
          for (size_t r = 0; r < retrievals; ++r)
            maskedKeyProducts(queryBuffers[r], retrievalOverlaps[r],
                              plan.reads[r].position, queryRow(r));

        // With a decay, a transposed read's S x_j for every step as rows
        // ([C, K] results) for the step loop below.
        bool tiledProducts = !blockedReads && cb.tiles(keys, chunk);
        if (tiledProducts)
          for (auto [read, results, products] :
               llvm::zip(plan.reads, resultBuffers, sTimesQueries))
            if (read.transposed)
              cb.storeTransposed(
                  keys, chunk,
                  [&](Value first, int64_t q) {
                    return cb.load(chunkRow, products, addIndex(first, q));
                  },
                  results);

        // 3. Step by step: decay the earlier keys, solve for w_j (delta
        // rule), add the chunk's earlier writes to the reads. The keys are
        // stored transposed ([K, C]), so that one pass over their K rows
        // gives a query's products with all the chunk's keys as one vector
        // (no horizontal sums), and a decay scales K rows of C.
        cb.loop(
            zero, length, 1, {},
            [&](Value j, ValueRange) -> SmallVector<Value> {
              Value t = stepOf(j);
              Value firstMicro =
                  micro == 1 ? j
                             : arith::MulIOp::create(b, loc, j, index(micro))
                                   .getResult();
              if (plan.decay) {
                Value factors = spill(decayOf(j));
                forRows(keysT, {},
                        [&](Value e, ValueRange) -> SmallVector<Value> {
                          cb.store(mul(row(keysT, e),
                                       splatElement(microRow, factors, e)),
                                   keysT, e);
                          return {};
                        });
              }
              // (x . p_i) for every key i of the chunk, as one vector.
              auto productsWithKeys = [&](Value x) {
                Value elements = spill(x);
                int64_t group = keys % 4 == 0 ? 4 : keys % 2 == 0 ? 2 : 1;
                SmallVector<Value> inits(group, constant(microRow, 0.0));
                scf::ForOp sums = forRowGroups(
                    keysT, group, inits,
                    [&](Value first, ValueRange acc) -> SmallVector<Value> {
                      SmallVector<Value> next;
                      for (int64_t r = 0; r < group; ++r) {
                        Value e = addIndex(first, r);
                        next.push_back(
                            cb.fma(splatElement(microRow, elements, e),
                                   row(keysT, e), acc[r]));
                      }
                      return next;
                    });
                Value total = sums.getResult(0);
                for (int64_t r = 1; r < group; ++r)
                  total = add(total, sums.getResult(r));
                return spill(total);
              };
              // base + sum over the chunk's writes i < end of (x . p_i) w_i.
              auto withEarlierWrites = [&](Value x, Value base, Value end) {
                Value products = productsWithKeys(x);
                return cb
                    .loop(zero, end, 1, ValueRange{base},
                          [&](Value i, ValueRange acc) -> SmallVector<Value> {
                            return {cb.fma(
                                splatElement(valueRow, products, i),
                                cb.load(valueRow, writesBuffer, i),
                                acc.front())};
                          })
                    .getResult(0);
              };
              // base + sum_{i < end} overlaps[j, i] w_i (products from 2b).
              auto withOverlaps = [&](Value overlaps, Value base, Value end) {
                return cb
                    .loop(zero, end, 1, ValueRange{base},
                          [&](Value i, ValueRange acc) -> SmallVector<Value> {
                            return {cb.fma(cb.splatAt(valueRow, overlaps, j, i),
                                           cb.load(valueRow, writesBuffer, i),
                                           acc.front())};
                          })
                    .getResult(0);
              };
              // The step's writes, micro-steps m j + w: the delta rule's
              // retrieval sees the chunk's writes before its own.
              SmallVector<Value> stepKeys;
              for (const ChunkPlan::Write &write : plan.writes) {
                Value u = addIndex(firstMicro, stepKeys.size());
                Value key = stepValue(write.form.key, t);
                Value w = stepValue(write.form.value, t);
                if (write.retrieval) {
                  Value results = resultBuffers[*write.retrieval];
                  Value base = cb.load(valueRow, results, j);
                  Value retrieved =
                      blockedReads
                          ? withOverlaps(retrievalOverlaps[*write.retrieval],
                                         base, u)
                          : withEarlierWrites(key, base, u);
                  cb.store(retrieved, results, j);
                  w = mul(splat(valueRow, stepValue(write.form.rate, t)),
                          sub(w, retrieved));
                }
                cb.store(w, writesBuffer, u);
                if (!blockedReads)
                  cb.storeColumn(key, keysT, u);
                stepKeys.push_back(key);
              }
              // The end of the writes a read at position p sees: m j + p.
              SmallVector<Value> ends{firstMicro};
              for (int64_t p = 1; p <= micro; ++p)
                ends.push_back(addIndex(firstMicro, p));
              // The decayed keys as rows, for the transposed reads: the
              // earlier ones decayed by this step's a_j, then the step's.
              if (keyRows) {
                if (plan.decay) {
                  Value factors = decayOf(j);
                  cb.loop(zero, firstMicro, 1, {},
                          [&](Value i, ValueRange) -> SmallVector<Value> {
                            cb.store(mul(cb.load(keyRow, keyRows, i), factors),
                                     keyRows, i);
                            return {};
                          });
                }
                for (auto [w, key] : llvm::enumerate(stepKeys))
                  cb.store(key, keyRows, addIndex(firstMicro, w));
              }
              // A transposed read: lambda_j (S x_j) (column j of the pass
              // over S) + sum_{i < end} (w_i . x_j) p_i.
              auto transposedRead = [&](Value x, Value products, Value results,
                                        Value end) {
                Value base;
                if (tiledProducts) {
                  base = cb.load(keyRow, results, j);
                } else {
                  Value column = scratchRow(element, keys);
                  cb.copyColumn(products, j, column,
                                [](Value e) -> SmallVector<Value> {
                                  return {e};
                                });
                  base = vector::LoadOp::create(b, loc, keyRow, column,
                                                ValueRange{zero});
                }
                if (lambdas)
                  base = mul(cb.load(keyRow, lambdas, j), base);
                return cb
                    .loop(zero, end, 1, ValueRange{base},
                          [&](Value i, ValueRange acc) -> SmallVector<Value> {
                            Value overlap =
                                dot(cb.load(valueRow, writesBuffer, i), x);
                            return {cb.fma(splat(keyRow, overlap),
                                           cb.load(keyRow, keyRows, i),
                                           acc.front())};
                          })
                    .getResult(0);
              };
              for (auto [r, read] : llvm::enumerate(plan.reads)) {
                if (r < retrievals || blockedReads)
                  continue;
                if (read.transposed) {
                  Value y =
                      transposedRead(stepValue(read.query, t), sTimesQueries[r],
                                     resultBuffers[r], ends[read.position]);
                  cb.store(y, resultBuffers[r], j);
                  continue;
                }
                Value y =
                    withEarlierWrites(stepValue(read.query, t),
                                      cb.load(valueRow, resultBuffers[r], j),
                                      ends[read.position]);
                cb.store(y, resultBuffers[r], j);
              }
              return {};
            });

        // The sums over the chunk's micro-steps below run over all C m of
        // them, loops of a constant trip count (1-2 % faster at d = 128 than
        // m * length): a short chunk first zeroes the writes and the keys'
        // columns past its own micro-steps (stale from the chunk before, or
        // the last step's keys repeated), so they add nothing.
        Value microLength =
            micro == 1 ? length
                       : arith::MulIOp::create(b, loc, length, index(micro))
                             .getResult();
        Value shortChunk = arith::CmpIOp::create(
            b, loc, arith::CmpIPredicate::slt, length, index(chunk));
        scf::IfOp::create(b, loc, shortChunk, [&](OpBuilder &nested,
                                                  Location) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPoint(nested.getInsertionBlock(),
                              nested.getInsertionPoint());
          cb.loop(microLength, index(microSteps), 1, {},
                  [&](Value i, ValueRange) -> SmallVector<Value> {
                    cb.store(constant(valueRow, 0.0), writesBuffer, i);
                    return {};
                  });
          Value kept = arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::slt, iotaTimes(microSteps, 1, 0),
              splatIndex(microSteps, microLength));
          Value zeros = constant(microRow, 0.0);
          forRows(keysT, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
            cb.store(arith::SelectOp::create(b, loc, kept, row(keysT, e), zeros),
                     keysT, e);
            return {};
          });
          scf::YieldOp::create(b, loc);
        });
        Value allMicroSteps = index(microSteps);

        // 3b. Without a decay, the reads that no write depends on, all the
        // chunk's steps at once: with the [C, C m] products X K^T of the
        // queries and keys (masked to i < m j + p), Y += (X K^T) W; for a
        // transposed read, with the [C m, C] products G = W X^T of the
        // writes and the (transposed) queries, (S X^T) += K^T G, then
        // column j of it is the result of step j. Blocked like phase 2: no
        // horizontal sums, every key and write row loaded once per block.
        for (auto [r, read] : llvm::enumerate(plan.reads)) {
          if (!blockedReads || r < retrievals)
            continue;
          Value queries = queryBuffers[r], results = resultBuffers[r];
          if (!read.transposed) {
            maskedKeyProducts(queries, readOverlaps, read.position,
                              queryRow(r));
            cb.loop(zero, length, block, {},
                    [&](Value first, ValueRange) -> SmallVector<Value> {
                      SmallVector<Value> inits;
                      for (int64_t q = 0; q < block; ++q)
                        inits.push_back(
                            cb.load(valueRow, results, addIndex(first, q)));
                      SmallVector<Value> sums =
                          cb.rowsTimes(readOverlaps, first, writesBuffer,
                                       allMicroSteps, inits);
                      for (int64_t q = 0; q < block; ++q)
                        cb.store(sums[q], results, addIndex(first, q));
                      return {};
                    });
            continue;
          }
          // Row i of W X^T: sum_e w_i[e] X^T[e, :], masked.
          Value bounds = iotaTimes(chunk, micro, read.position);
          Value zeros = constant(chunkRow, 0.0);
          forRowGroups(writeOverlaps, group, {},
                       [&](Value first, ValueRange) -> SmallVector<Value> {
                         SmallVector<Value> inits(group, zeros);
                         SmallVector<Value> sums =
                             cb.rowsTimes(writesBuffer, first, queries,
                                          index(values), inits);
                         for (int64_t q = 0; q < group; ++q) {
                           Value i = addIndex(first, q);
                           Value mask = keep(bounds, splatIndex(chunk, i));
                           cb.store(arith::SelectOp::create(b, loc, mask,
                                                            sums[q], zeros),
                                    writeOverlaps, i);
                         }
                         return {};
                       });
          Value products = sTimesQueries[r];
          forRowGroups(products, rowGroup, {},
                       [&](Value first, ValueRange) -> SmallVector<Value> {
                         SmallVector<Value> inits;
                         for (int64_t q = 0; q < rowGroup; ++q)
                           inits.push_back(
                               cb.load(chunkRow, products, addIndex(first, q)));
                         SmallVector<Value> sums = cb.rowsTimes(
                             keysT, first, writeOverlaps, allMicroSteps, inits);
                         for (int64_t q = 0; q < rowGroup; ++q)
                           cb.store(sums[q], products, addIndex(first, q));
                         return {};
                       });
          // Column j of the [K, C] products is row j of the results.
          if (cb.tiles(keys, chunk)) {
            cb.storeTransposed(
                keys, chunk,
                [&](Value first, int64_t q) {
                  return cb.load(chunkRow, products, addIndex(first, q));
                },
                results);
            continue;
          }
          cb.loop(zero, length, 1, {},
                  [&](Value j, ValueRange) -> SmallVector<Value> {
                    cb.copyColumn(products, j, results,
                                  [&](Value e) -> SmallVector<Value> {
                                    return {j, e};
                                  });
                    return {};
                  });
        }

        // 4. The new state: W[e, :] = lambda_n[e] S[e, :] + sum_i p_i[e] w_i
        // over the chunk's micro-steps i, `rowBlock` rows at a time.
        vector::StoreOp::create(b, loc, lambdaEnd, lambdaRow,
                                ValueRange{zero});
        // Rows wider than two registers go in slabs of `columnWidth`
        // columns, `slabRows` rows per pass over the writes' slab (which
        // stays in L1 while S streams through).
        int64_t slabRows = 16 / columnRegisters;
        bool slabs = columnWidth < values && keys % slabRows == 0;
        cb.loop(
            zero, index(values), slabs ? columnWidth : values, {},
            [&](Value c, ValueRange) -> SmallVector<Value> {
              VectorType rowType = slabs ? columnType : valueRow;
              int64_t rows = slabs ? slabRows : rowBlock;
              forRowGroups(
                  state, rows, {},
                  [&](Value first, ValueRange) -> SmallVector<Value> {
                    SmallVector<Value> inits;
                    for (int64_t r = 0; r < rows; ++r) {
                      Value e = addIndex(first, r);
                      Value row = vector::LoadOp::create(b, loc, rowType, state,
                                                         ValueRange{e, c});
                      inits.push_back(
                          plan.decay
                              ? mul(splatElement(rowType, lambdaRow, e), row)
                              : row);
                    }
                    SmallVector<Value> sums =
                        cb.rowsTimes(keysT, first, writesBuffer, allMicroSteps,
                                     inits, nullptr, c);
                    for (int64_t r = 0; r < rows; ++r)
                      vector::StoreOp::create(b, loc, sums[r], state,
                                              ValueRange{addIndex(first, r), c});
                    return {};
                  });
              return {};
            });

        // 5. The rest of each step, with the chunk's reads.
        scf::ForOp steps = cb.loop(
            zero, length, 1, vectorStates,
            [&](Value j, ValueRange states) -> SmallVector<Value> {
              for (auto [read, buffer] :
                   llvm::zip(plan.reads, resultBuffers))
                lowered[read.result] = cb.load(rowOf(buffer), buffer, j);
              SmallVector<Operation *> chainOps;
              if (plan.decay)
                chainOps.push_back(plan.decay);
              for (const ChunkPlan::Write &write : plan.writes)
                chainOps.push_back(write.op);
              for (Operation *op : chainOps)
                for (Value result : op->getResults())
                  if (isa<FastWeightType>(result.getType()))
                    lowered[result] = state;
              SmallVector<Value> next;
              Value t = stepOf(j);
              if (failed(lowerBody(t, states, next)) ||
                  failed(lowerTimeParallelStep(Place::Epilogue, t))) {
                status = failure();
                return SmallVector<Value>(states.begin(), states.end());
              }
              loc = scan.getLoc();
              return next;
            });
        if (failed(status))
          return SmallVector<Value>(vectorStates.begin(), vectorStates.end());
        return SmallVector<Value>(steps.getResults().begin(),
                                  steps.getResults().end());
      });
  if (failed(status))
    return failure();
  b.setInsertionPointAfter(chunks);
  if (plan.trailingDecay) {
    // The last iteration's decay, which no later step applies (none when
    // the call has no steps).
    Value last = arith::MaxSIOp::create(
        b, loc, arith::SubIOp::create(b, loc, count, index(1)), zero);
    Value factors = spill(arith::SelectOp::create(
        b, loc,
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, count, zero),
        constant(keyRow, 1.0),
        stepValue(plan.decayForm.rowScale, stepOfIteration(last, count))));
    forRows(state, {}, [&](Value e, ValueRange) -> SmallVector<Value> {
      Value row = vector::LoadOp::create(b, loc, valueRow, state,
                                         ValueRange{e, zero});
      vector::StoreOp::create(b, loc, mul(splatElement(valueRow, factors, e), row),
                              state, ValueRange{e, zero});
      return {};
    });
  }
  llvm::append_range(finalVectorStates, chunks.getResults());
  return success();
}
