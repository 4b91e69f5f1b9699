// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=4 --canonicalize | FileCheck %s
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=0 | FileCheck %s --check-prefix=OFF
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=-1 | FileCheck %s --check-prefix=AUTO
// RUN: not fwp-opt %s --convert-fwp-to-cpu=chunk=-2 2>&1 | FileCheck %s --check-prefix=BAD

// The chunkwise form of scans whose one fast weight is updated linearly
// with time-parallel coefficients (ChunkwiseScan.cpp).

// BAD: error: chunk must be -1 (automatic), 0 (the recurrent form) or a length, got -2

// The delta rule with a decay of the rows: a loop over chunks of 4 steps
// (the last one shorter); the decays' products and the decayed queries;
// one pass over the rows of the state for 4 queries at a time (4
// accumulators, the row loaded once for all 4); the steps one by one; the
// new state, 4 rows at a time, written once per chunk; then the rest of
// each step.
// CHECK-LABEL: func.func @gated_delta
// CHECK-SAME: fwp.chunk = 4
// CHECK: scf.for %[[START:.*]] = %{{.*}} to %arg0 step %[[C4:c4.*]] {
// CHECK-NEXT: %[[LEFT:.*]] = arith.subi %arg0, %[[START]]
// CHECK-NEXT: %[[LEN:.*]] = arith.minsi %[[LEFT]], %{{.*}}
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[LEN]] step %{{.*}} iter_args(%{{.*}} = %{{.*}}) -> (vector<8xf32>)
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[LEN]] step %[[C4]]
// CHECK: scf.for %{{.*}} iter_args(%{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK: vector.load %arg{{.*}} : memref<8x16xf32>, vector<16xf32>
// CHECK-COUNT-4: vector.fma
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[LEN]]
// A short chunk zeroes the writes and the keys' columns past its steps, so
// that the new state sums over all 4 (a loop of constant length).
// CHECK: %[[SHORT:.*]] = arith.cmpi slt, %[[LEN]], %[[C4]]
// CHECK-NEXT: scf.if %[[SHORT]] {
// CHECK-NEXT: scf.for %{{.*}} = %[[LEN]] to %[[C4]] step %c1 {
// CHECK: arith.select
// CHECK: scf.for %[[ROW:.*]] = %{{.*}} to %{{.*}} step %[[C4]]
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[C4]] step %c1 iter_args(
// CHECK-COUNT-4: vector.fma
// CHECK-COUNT-4: vector.store %{{.*}}, %arg{{.*}} : memref<8x16xf32>, vector<16xf32>
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[LEN]]
// CHECK-NOT: memref.copy
// CHECK: return
fwp.scan @gated_delta seq(%q : vector<8xf32>, %k : vector<8xf32>, %v : vector<16xf32>,
                          %beta : f32, %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x16xf32>) outputs(y : vector<16xf32>, r : vector<16xf32>) {
  %a = fwp.sigmoid %g : vector<8xf32>
  %b = fwp.sigmoid %beta : f32
  %Wd = fwp.scale_rows %W, %a : !fwp.fast_weight<8x16xf32>, vector<8xf32>
  %W1, %vbar = fwp.write_delta %Wd, %k, %v, %b : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<16xf32>
  %y = fwp.read %W1, %q : !fwp.fast_weight<8x16xf32>, vector<8xf32> -> vector<16xf32>
  fwp.yield %W1, %y, %vbar : !fwp.fast_weight<8x16xf32>, vector<16xf32>, vector<16xf32>
}
// OFF-LABEL: func.func @gated_delta
// OFF-NOT: fwp.chunk
// AUTO-LABEL: func.func @gated_delta
// AUTO-NOT: fwp.chunk

// A vector state beside the fast weight (the linear Transformer's
// normaliser) runs step by step inside each chunk, carried across chunks.
// CHECK-LABEL: func.func @with_vector_state
// CHECK-SAME: fwp.chunk = 4
// CHECK: scf.for %{{.*}} iter_args(%[[Z:.*]] = %{{.*}}) -> (vector<32xf32>)
// AUTO-LABEL: func.func @with_vector_state
// AUTO-NOT: fwp.chunk
fwp.scan @with_vector_state seq(%q : vector<32xf32>, %k : vector<32xf32>, %v : vector<32xf32>)
    states(%W : !fwp.fast_weight<32x32xf32>, %z : vector<32xf32>) outputs(y : vector<32xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<32x32xf32>, vector<32xf32>, vector<32xf32>
  %z1 = fwp.add %z, %k : vector<32xf32>
  %num = fwp.read %W1, %q : !fwp.fast_weight<32x32xf32>, vector<32xf32> -> vector<32xf32>
  %den = fwp.dot %z1, %q : vector<32xf32>
  %y = fwp.scale %num, %den : vector<32xf32>
  fwp.yield %W1, %z1, %y : !fwp.fast_weight<32x32xf32>, vector<32xf32>, vector<32xf32>
}

// chunk=-1 (fwp-compile's default) takes the chunkwise form once the state
// outgrows the L1 data cache (more than 48 KiB): 128 x 128 f32 is 64 KiB.
// AUTO-LABEL: func.func @large_state
// AUTO-SAME: fwp.chunk = 16
// A read's pass over a wide state (V = 128 f32, 8 registers a row) takes
// slabs of 32 columns (two registers), 4 queries (the chunk) per slab.
// Without a decay the queries are read from their own [T, K] buffer (here
// the seq input), no copy per chunk, at rows clamped to the chunk.
// CHECK-LABEL: func.func @large_state
// CHECK-SAME: fwp.chunk = 4
// CHECK: scf.for %[[SLAB:.*]] = %{{.*}} to %c128 step %c32 {
// CHECK-NEXT: scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c4 {
// CHECK: arith.minsi
// CHECK: scf.for %[[E:.*]] = %{{.*}} to %c128 step %c1 iter_args({{.*}}) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>)
// CHECK-NEXT: vector.load %arg{{.*}}[%[[E]], %[[SLAB]]] : memref<128x128xf32>, vector<32xf32>
// CHECK-NEXT: memref.load %arg1[%{{.*}}, %[[E]]] : memref<?x128xf32>
// CHECK-COUNT-4: vector.fma
// The new state in the same slabs, 8 rows (16 registers) per pass over the
// writes' slab, over all 4 micro-steps.
// CHECK: scf.for %[[SLAB2:.*]] = %{{.*}} to %c128 step %c32 {
// CHECK-NEXT: scf.for %[[ROW:.*]] = %{{.*}} to %c128 step %c8 {
// CHECK: vector.load %arg4[%[[ROW]], %[[SLAB2]]] : memref<128x128xf32>, vector<32xf32>
// CHECK: scf.for %{{.*}} = %c0 to %c4 step %c1 iter_args({{.*}}) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>)
// CHECK-COUNT-8: vector.fma
// CHECK: vector.store %{{.*}}, %arg4[%[[ROW]], %[[SLAB2]]] : memref<128x128xf32>, vector<32xf32>
fwp.scan @large_state seq(%q : vector<128xf32>, %k : vector<128xf32>, %v : vector<128xf32>)
    states(%W : !fwp.fast_weight<128x128xf32>) outputs(y : vector<128xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<128x128xf32>, vector<128xf32>, vector<128xf32>
  %y = fwp.read %W1, %q : !fwp.fast_weight<128x128xf32>, vector<128xf32> -> vector<128xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<128x128xf32>, vector<128xf32>
}

// A scan backwards in time: the chunks cover T from its end, step j of a
// chunk is step T - 1 - (start + j) of time (a short chunk is then the
// start of time).
// CHECK-LABEL: func.func @reverse
// CHECK-SAME: fwp.chunk = 4
// CHECK: scf.for %[[START:.*]] = %{{.*}} to %arg0 step %[[C4:c4.*]] {
// CHECK-NEXT: %[[LEFT:.*]] = arith.subi %arg0, %[[START]]
// CHECK-NEXT: %[[LEN:.*]] = arith.minsi %[[LEFT]], %[[C4]]
// CHECK-NEXT: scf.for %[[J:.*]] = %{{.*}} to %[[LEN]] step %{{.*}} {
// CHECK-NEXT: %[[I:.*]] = arith.addi %[[START]], %[[J]]
// CHECK-NEXT: %[[LAST:.*]] = arith.subi %arg0, %c1
// CHECK-NEXT: %[[T:.*]] = arith.subi %[[LAST]], %[[I]]
// CHECK-NEXT: vector.load %arg1[%[[T]], %{{.*}}] : memref<?x8xf32>, vector<8xf32>
// CHECK: return
fwp.scan @reverse reverse seq(%k : vector<8xf32>, %v : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}
// OFF-LABEL: func.func @reverse
// OFF-NOT: fwp.chunk

// Transposed reads W x (K = 8, V = 16) of the decayed weight before the
// write (%r) and of the weight after it (%y). Per chunk: lambda_j, and the
// queries x_j stored transposed ([V, C]); S x_j for all the chunk's steps
// as one product of S with the transposed queries, 8 rows of S per pass
// (here all of them), a vector of the chunk's steps per row (no horizontal
// sums); then step by step the decayed keys as rows (the earlier ones decayed, then k_j), and
// lambda_j (S x_j) + sum (w_i . x_j) p_i over the chunk's writes i < j
// (before the write) or i <= j (after it).
// CHECK-LABEL: func.func @transposed_read
// CHECK-SAME: fwp.chunk = 4
// CHECK: scf.for %[[START:.*]] = %{{.*}} to %arg0 step %[[C4:c4.*]] {
// CHECK: %[[LEN:.*]] = arith.minsi
// CHECK: scf.for %[[J1:.*]] = %{{.*}} to %[[LEN]] step %{{.*}} iter_args(%{{.*}} = %{{.*}}) -> (vector<8xf32>)
// CHECK: memref.store %{{.*}}, %[[QT:.*]][%{{.*}}, %[[J1]]] : memref<16x4xf32>
// CHECK: vector.store %{{.*}}, %[[LAMBDAS:.*]][%[[J1]], %{{.*}}] : memref<4x8xf32>, vector<8xf32>
// CHECK: scf.for %[[M:.*]] = %{{.*}} to %c16 step %c1 iter_args({{.*}}) -> (vector<4xf32>, vector<4xf32>, vector<4xf32>, vector<4xf32>, vector<4xf32>, vector<4xf32>, vector<4xf32>, vector<4xf32>) {
// CHECK-NEXT: vector.load %[[QT]][%[[M]], %{{.*}}] : memref<16x4xf32>, vector<4xf32>
// CHECK-NEXT: memref.load %arg5[%c0, %[[M]]] : memref<8x16xf32>
// CHECK-COUNT-8: vector.fma
// CHECK-NOT: vector.reduction
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %[[LEN]] step %c1 {
// CHECK: %[[NEXT:.*]] = arith.addi %[[J]], %c1
// CHECK: scf.for %[[I:.*]] = %{{.*}} to %[[J]] step %c1 {
// CHECK: arith.mulf %{{.*}} : vector<8xf32>
// CHECK: vector.store %{{.*}}, %[[ROWS:.*]][%[[J]], %{{.*}}] : memref<4x8xf32>, vector<8xf32>
// CHECK: %[[LAMBDA:.*]] = vector.load %[[LAMBDAS]][%[[J]], %{{.*}}] : memref<4x8xf32>, vector<8xf32>
// CHECK-NEXT: %[[SCALED:.*]] = arith.mulf %[[LAMBDA]], %{{.*}} : vector<8xf32>
// CHECK-NEXT: scf.for %{{.*}} = %{{.*}} to %[[J]] step %c1 iter_args(%{{.*}} = %[[SCALED]]) -> (vector<8xf32>) {
// CHECK: vector.reduction <add>, %{{.*}} : vector<16xf32> into f32
// CHECK: vector.load %[[ROWS]]
// CHECK: vector.fma
// CHECK: vector.load %[[LAMBDAS]][%[[J]], %{{.*}}] : memref<4x8xf32>, vector<8xf32>
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[NEXT]] step %c1 iter_args(
// CHECK: return
fwp.scan @transposed_read seq(%k : vector<8xf32>, %v : vector<16xf32>, %x : vector<16xf32>,
                              %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x16xf32>) outputs(y : vector<8xf32>, r : vector<8xf32>) {
  %Wd = fwp.scale_rows %W, %g : !fwp.fast_weight<8x16xf32>, vector<8xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<16xf32>
  %y = fwp.read_transposed %W1, %x : !fwp.fast_weight<8x16xf32>, vector<16xf32> -> vector<8xf32>
  %r = fwp.read_transposed %Wd, %v : !fwp.fast_weight<8x16xf32>, vector<16xf32> -> vector<8xf32>
  fwp.yield %W1, %y, %r : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<8xf32>
}

// Not linear with time-parallel coefficients: the recurrent form.
// A write whose value depends on the state through another read.
// CHECK-LABEL: func.func @state_dependent_value
// CHECK-NOT: fwp.chunk
// CHECK: return
fwp.scan @state_dependent_value seq(%k : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %r = fwp.read %W, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  %u = fwp.tanh %r : vector<8xf32>
  %W1 = fwp.write_sum %W, %k, %u : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  fwp.yield %W1, %r : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}

// The matrix itself as an output (a stored tape).
// CHECK-LABEL: func.func @matrix_output
// CHECK-NOT: fwp.chunk
// CHECK: return
fwp.scan @matrix_output seq(%k : vector<8xf32>, %v : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(prev : !fwp.fast_weight<8x8xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  fwp.yield %W1, %W : !fwp.fast_weight<8x8xf32>, !fwp.fast_weight<8x8xf32>
}

// A read of the state before its decay.
// CHECK-LABEL: func.func @read_before_decay
// CHECK-NOT: fwp.chunk
// CHECK: return
fwp.scan @read_before_decay seq(%k : vector<8xf32>, %v : vector<8xf32>, %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %Wd = fwp.scale_rows %W, %g : !fwp.fast_weight<8x8xf32>, vector<8xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %y = fwp.read %W, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}


// A transposed read of the state before its decay.
// CHECK-LABEL: func.func @transposed_read_before_decay
// CHECK-NOT: fwp.chunk
// CHECK: return
fwp.scan @transposed_read_before_decay seq(%k : vector<8xf32>, %v : vector<8xf32>, %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %Wd = fwp.scale_rows %W, %g : !fwp.fast_weight<8x8xf32>, vector<8xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %y = fwp.read_transposed %W, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}

// A transposed read whose query depends on the state (a read of it).
// CHECK-LABEL: func.func @state_dependent_transposed_query
// CHECK-NOT: fwp.chunk
// CHECK: return
fwp.scan @state_dependent_transposed_query seq(%k : vector<8xf32>, %v : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %r = fwp.read %W1, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  %y = fwp.read_transposed %W1, %r : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}

// Two writes per step on the matrix (a sum write and then the delta rule,
// as the backward's dW takes), backwards in time, K = 8, V = 16: write w of
// step j is micro-step 2 j + w of the chunk, whose keys ([K, 2 C], stored
// transposed) and writes ([2 C, V]) hold all its micro-steps. The delta
// rule's retrieval sees the chunk's writes before 2 j + 1 (the step's sum
// write included). Without a decay the keys are stored before the step
// loop, and the products of the retrievals' and reads' queries with the
// chunk's keys (writes for a transposed read) are computed all steps at
// once, masked: the retrieval at j = 0 sees the first write only, a read
// before the writes the writes before 2 j (at j = 1 the first two), a read
// between them (here a transposed one) those before 2 j + 1 (write i is
// kept for the steps j with 2 j + 1 > i), a read after them those before
// 2 j + 2. Only the retrievals run step by step (the delta rule); the other
// reads run after the step loop; the new state sums over 2 x length
// micro-steps.
// CHECK-LABEL: func.func @reverse_two_writes
// CHECK-SAME: fwp.chunk = 4
// CHECK-DAG: %[[FIRST1:.*]] = arith.constant dense<[true, false, false, false, false, false, false, false]> : vector<8xi1>
// CHECK-DAG: %[[FIRST2:.*]] = arith.constant dense<[true, true, false, false, false, false, false, false]> : vector<8xi1>
// CHECK-DAG: %[[BOUNDS:.*]] = arith.constant dense<[1, 3, 5, 7]> : vector<4xi64>
// CHECK: scf.for %[[START:.*]] = %{{.*}} to %arg0 step %[[C4:c4.*]] {
// CHECK: %[[LEN:.*]] = arith.minsi
// CHECK: scf.for %[[J0:.*]] = %{{.*}} to %[[LEN]] step %c1 {
// CHECK: %[[K0:.*]] = arith.muli %[[J0]], %c2
// CHECK: memref.store %{{.*}}, %[[KEYS:.*]][%{{.*}}, %[[K0]]] : memref<8x8xf32>
// CHECK: %[[K1:.*]] = arith.addi %{{.*}}, %c1
// CHECK: memref.store %{{.*}}, %[[KEYS]][%{{.*}}, %[[K1]]] : memref<8x8xf32>
// CHECK: arith.select %[[FIRST1]], %{{.*}} : vector<8xi1>, vector<8xf32>
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %[[LEN]] step %c1 {
// CHECK: %[[U0:.*]] = arith.muli %[[J]], %c2
// CHECK: vector.store %{{.*}}, %[[WRITES:.*]][%[[U0]], %{{.*}}] : memref<8x16xf32>, vector<16xf32>
// CHECK: %[[U1:.*]] = arith.addi %[[U0]], %c1
// CHECK: scf.for %{{.*}} = %{{.*}} to %[[U1]] step %c1 iter_args(
// CHECK: vector.store %{{.*}}, %[[WRITES]][%[[U1]], %{{.*}}] : memref<8x16xf32>, vector<16xf32>
// CHECK-NOT: vector.reduction
// CHECK: %[[MICRO:.*]] = arith.muli %[[LEN]], %c2
// CHECK: scf.if
// CHECK-NEXT: scf.for %{{.*}} = %[[MICRO]] to %c8 step %c1 {
// CHECK: arith.select %[[FIRST2]], %{{.*}} : vector<8xi1>, vector<8xf32>
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c1 iter_args(
// CHECK: arith.cmpi slt, %{{.*}}, %[[BOUNDS]] : vector<4xi64>
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c1 iter_args(
// CHECK: arith.select %[[FIRST2]], %{{.*}} : vector<8xi1>, vector<8xf32>
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c1 iter_args(
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c1 iter_args(
// CHECK-NOT: vector.reduction
// CHECK: return
// OFF-LABEL: func.func @reverse_two_writes
// OFF-NOT: fwp.chunk
fwp.scan @reverse_two_writes reverse seq(%k : vector<8xf32>, %v : vector<16xf32>,
                                         %x : vector<16xf32>, %q : vector<8xf32>, %beta : f32)
    states(%W : !fwp.fast_weight<8x16xf32>)
    outputs(y : vector<16xf32>, r : vector<16xf32>, u : vector<8xf32>) {
  %r = fwp.read %W, %q : !fwp.fast_weight<8x16xf32>, vector<8xf32> -> vector<16xf32>
  %W1 = fwp.write_sum %W, %q, %x : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<16xf32>
  %W2, %vbar = fwp.write_delta %W1, %k, %v, %beta : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<16xf32>
  %y = fwp.read %W2, %q : !fwp.fast_weight<8x16xf32>, vector<8xf32> -> vector<16xf32>
  %u = fwp.read_transposed %W1, %x : !fwp.fast_weight<8x16xf32>, vector<16xf32> -> vector<8xf32>
  fwp.yield %W2, %y, %r, %u : !fwp.fast_weight<8x16xf32>, vector<16xf32>, vector<16xf32>, vector<8xf32>
}

// The backward's dW: a sum write and then a delta write with a zero value
// (the adjoint of write_delta), backwards in time: micro-steps as above.
// CHECK-LABEL: func.func @dw_like
// CHECK-SAME: fwp.chunk = 4
fwp.scan @dw_like reverse seq(%q : vector<8xf32>, %g : vector<16xf32>, %k : vector<8xf32>,
                              %beta : f32)
    states(%dW : !fwp.fast_weight<8x16xf32>) outputs(y : vector<16xf32>) {
  %zero = fwp.constant 0.0 : vector<16xf32>
  %dW1 = fwp.write_sum %dW, %q, %g : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<16xf32>
  %dW2, %r = fwp.write_delta %dW1, %k, %zero, %beta : !fwp.fast_weight<8x16xf32>, vector<8xf32>, vector<16xf32>
  %y = fwp.read %dW2, %k : !fwp.fast_weight<8x16xf32>, vector<8xf32> -> vector<16xf32>
  fwp.yield %dW2, %y : !fwp.fast_weight<8x16xf32>, vector<16xf32>
}

// A decay after the writes whose result only goes on (the adjoint chain of
// a decaying weight, G <- a (.) (G + q (x) g)): the chunkwise form with the
// decay of the iteration before each step's writes (ones before the first),
// and after the chunks the last iteration's decay of the final state.
// CHECK-LABEL: func.func @trailing_decay
// CHECK-SAME: fwp.chunk = 4
// CHECK: scf.for %{{.*}} = %{{.*}} to %arg0 step %c4
// CHECK: arith.cmpi eq
// CHECK: arith.select
// The last iteration's decay (step 0 backwards in time), after the chunks:
// CHECK: %[[EMPTY:.*]] = arith.cmpi eq, %arg0, %c0
// CHECK-NEXT: %[[A:.*]] = arith.select %[[EMPTY]], %{{.*}}, %{{.*}}
// CHECK-NEXT: vector.store %[[A]], %[[SPILL:.*]][%c0]
// CHECK-NEXT: scf.for %[[E:.*]] = %c0 to %c8 step %c1 {
// CHECK-NEXT: %[[ROW:.*]] = vector.load %arg4[%[[E]], %c0]
// CHECK-NEXT: %[[AE:.*]] = memref.load %[[SPILL]][%[[E]]]
// CHECK-NEXT: %[[SPLAT:.*]] = vector.broadcast %[[AE]]
// CHECK-NEXT: %[[NEW:.*]] = arith.mulf %[[SPLAT]], %[[ROW]]
// CHECK-NEXT: vector.store %[[NEW]], %arg4[%[[E]], %c0]
fwp.scan @trailing_decay reverse seq(%k : vector<8xf32>, %v : vector<8xf32>, %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>, z : vector<8xf32>) {
  %y = fwp.read %W, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %z = fwp.read_transposed %W1, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  %Wd = fwp.scale_rows %W1, %g : !fwp.fast_weight<8x8xf32>, vector<8xf32>
  fwp.yield %Wd, %y, %z : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
}

// A decay after a write whose result is read: not the chunkwise form.
// CHECK-LABEL: func.func @decay_after_write
// CHECK-NOT: fwp.chunk
// CHECK: return
fwp.scan @decay_after_write seq(%k : vector<8xf32>, %v : vector<8xf32>, %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %Wd = fwp.scale_rows %W1, %g : !fwp.fast_weight<8x8xf32>, vector<8xf32>
  %y = fwp.read %Wd, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %Wd, %y : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}

// The prologue (elu+1 of the keys) runs chunk by chunk, a loop over the
// chunk's steps before its phases; the epilogue (elu+1 of the read) step by
// step after them, in the loop that takes each step's read from the
// chunk's results (no [T, n] buffer for the read); no loop over all of T
// besides.
// CHECK-LABEL: func.func @time_parallel_per_chunk
// CHECK-SAME: fwp.chunk = 4
// CHECK-NOT: math.exp
// CHECK: scf.for %[[START:.*]] = %{{.*}} to %arg0 step %c4 {
// CHECK: %[[LEN:.*]] = arith.minsi
// CHECK-NEXT: %[[END:.*]] = arith.addi %[[START]], %[[LEN]]
// CHECK-NEXT: scf.for %{{.*}} = %[[START]] to %[[END]] step %c1 {
// CHECK: math.exp
// The chunk's new state, then the rest of each step.
// CHECK: vector.store %{{.*}}, %arg4[%{{.*}}, %c0] : memref<8x8xf32>, vector<8xf32>
// CHECK: scf.for %[[J:.*]] = %c0 to %[[LEN]] step %c1 {
// CHECK-NEXT: %[[READ:.*]] = vector.load %{{.*}}[%[[J]], %c0] : memref<4x8xf32>, vector<8xf32>
// CHECK: math.exp %[[READ]]
// CHECK: vector.store %{{.*}}, %arg5[%{{.*}}, %c0] : memref<?x8xf32>, vector<8xf32>
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NOT: scf.for
// CHECK: return
fwp.scan @time_parallel_per_chunk seq(%k : vector<8xf32>, %v : vector<8xf32>, %q : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %kn = fwp.elu_plus_one %k : vector<8xf32>
  %W1 = fwp.write_sum %W, %kn, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %r = fwp.read %W1, %q : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  %y = fwp.elu_plus_one %r : vector<8xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}
