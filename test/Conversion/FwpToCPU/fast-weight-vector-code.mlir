// RUN: fwp-opt %s --convert-fwp-to-cpu --canonicalize | FileCheck %s

// How the fast-weight ops use the vector unit (FastWeightPatterns.cpp).

// read: y = sum_e q[e] W[e, :] over rows in groups of 4 with 4 independent
// accumulators (no chain of K dependent FMAs); q[e] is read from a stack
// copy of q, not extracted from a register at a run-time index.
// CHECK-LABEL: func.func @read
// CHECK: memref.alloca() : memref<8xf32>
// CHECK: scf.for %[[E:.*]] = %{{.*}} to %{{.*}} step %[[C4:.*]] iter_args(%{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK-COUNT-4: vector.fma
// CHECK: scf.yield
// CHECK-COUNT-3: arith.addf %{{.*}} : vector<16xf32>
fwp.scan @read seq(%q : vector<8xf32>) states(%W : !fwp.fast_weight<8x16xf32>)
    outputs(y : vector<16xf32>) {
  %y = fwp.read %W, %q : !fwp.fast_weight<8x16xf32>, vector<8xf32> -> vector<16xf32>
  fwp.yield %W, %y : !fwp.fast_weight<8x16xf32>, vector<16xf32>
}

// read_transposed: y[e] = W[e, :] . x for 16 rows at a time: per row two
// 16-lane FMAs/products, then one tree of shuffles and adds (15 pairs of
// shuffles for 16 rows) instead of 16 horizontal reductions; each group's
// 16 sums are stored to a stack row that is read back whole.
// CHECK-LABEL: func.func @read_transposed
// CHECK: %[[SUMS:.*]] = memref.alloca() : memref<32xf32>
// CHECK: scf.for %{{.*}} = 
// CHECK: scf.for %[[G:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
// CHECK-NOT: vector.reduction
// CHECK-COUNT-30: vector.shuffle
// CHECK-NOT: vector.reduction
// CHECK: vector.store %{{.*}}, %[[SUMS]][%[[G]]] : memref<32xf32>, vector<16xf32>
// CHECK: vector.load %[[SUMS]][%{{.*}}] : memref<32xf32>, vector<32xf32>
fwp.scan @read_transposed seq(%x : vector<32xf32>)
    states(%W : !fwp.fast_weight<32x32xf32>) outputs(y : vector<32xf32>) {
  %y = fwp.read_transposed %W, %x : !fwp.fast_weight<32x32xf32>, vector<32xf32> -> vector<32xf32>
  fwp.yield %W, %y : !fwp.fast_weight<32x32xf32>, vector<32xf32>
}

// Shapes the tree does not take (3 columns) fall back to one reduction per
// row, stored to a stack row.
// CHECK-LABEL: func.func @read_transposed_odd
// CHECK: %[[SUMS:.*]] = memref.alloca() : memref<8xf32>
// CHECK: scf.for %{{.*}} =
// CHECK: scf.for %[[E:.*]] =
// CHECK: vector.reduction <add>
// CHECK: memref.store %{{.*}}, %[[SUMS]][%[[E]]] : memref<8xf32>
// CHECK: vector.load %[[SUMS]][%{{.*}}] : memref<8xf32>, vector<8xf32>
fwp.scan @read_transposed_odd seq(%x : vector<3xf32>)
    states(%W : !fwp.fast_weight<8x3xf32>) outputs(y : vector<8xf32>) {
  %y = fwp.read_transposed %W, %x : !fwp.fast_weight<8x3xf32>, vector<3xf32> -> vector<8xf32>
  fwp.yield %W, %y : !fwp.fast_weight<8x3xf32>, vector<8xf32>
}

// A row sweep: the write and the two reads of what it wrote share one pass
// over the rows (one loop inside the time loop); the reads' vector
// operands, computed after the write in the body, are scheduled before it.
// CHECK-LABEL: func.func @sweep
// CHECK: scf.for
// CHECK: scf.for
// CHECK: vector.fma
// CHECK: vector.store
// CHECK: vector.shuffle
// CHECK: scf.yield
// CHECK-NOT: scf.for
// CHECK: return
fwp.scan @sweep seq(%k : vector<32xf32>, %v : vector<16xf32>, %q : vector<32xf32>)
    states(%W : !fwp.fast_weight<32x16xf32>) outputs(y : vector<16xf32>, z : vector<32xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<32x16xf32>, vector<32xf32>, vector<16xf32>
  %q2 = fwp.add %q, %k : vector<32xf32>
  %y = fwp.read %W1, %q2 : !fwp.fast_weight<32x16xf32>, vector<32xf32> -> vector<16xf32>
  %z = fwp.read_transposed %W1, %v : !fwp.fast_weight<32x16xf32>, vector<16xf32> -> vector<32xf32>
  fwp.yield %W1, %y, %z : !fwp.fast_weight<32x16xf32>, vector<16xf32>, vector<32xf32>
}

// A write whose old value is still read later stores its rows to a scratch
// matrix as it goes (no separate copy); the later read of the old value
// starts a second sweep. The one copy left is the new state's way back to
// the state buffer at the end of the step.
// CHECK-LABEL: func.func @copy_on_write
// CHECK: %[[NEW:.*]] = memref.alloc() : memref<8x8xf32>
// CHECK: scf.for
// CHECK-NOT: memref.copy
// CHECK: vector.store %{{.*}}, %[[NEW]]
// CHECK-NOT: memref.copy
// CHECK: scf.for
// CHECK-NOT: memref.copy
// CHECK: memref.copy %[[NEW]], %[[LOCAL:.*]] :
// CHECK: memref.copy %[[LOCAL]], %arg3
// CHECK: return
fwp.scan @copy_on_write seq(%k : vector<8xf32>, %v : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  %u = fwp.add %y, %v : vector<8xf32>
  %z = fwp.read %W, %u : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %W1, %z : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}

// The state before the step as an output (the tape of a stored or
// checkpointed backward, as forward_train records it): its rows go to the
// step's slice of the output first, and the writes then update the state
// in place — no scratch matrix, no copy back at the step's end.
// The state (256 bytes) runs in a stack copy kept in registers
// (fwp-to-cpu.mlir, @lt): its rows go to the slice one by one, without a
// loop, which LLVM would make a call to memcpy (spilling the registers
// around it).
// CHECK-LABEL: func.func @old_state_as_output
// CHECK-NOT: memref.alloc()
// CHECK: %[[WL:.*]] = memref.alloca() : memref<8x8xf32>
// CHECK: memref.copy %arg4, %[[WL]]
// CHECK: scf.for %[[T:.*]] = 
// CHECK: %[[SLICE:.*]] = memref.subview %arg6[%[[T]], 0, 0] [1, 8, 8] [1, 1, 1]
// CHECK-NOT: scf.for
// CHECK-COUNT-8: vector.store %{{.*}}, %[[SLICE]]
// CHECK: scf.for
// CHECK: vector.store %{{.*}}, %[[WL]][
// CHECK-NOT: memref.copy
// CHECK: memref.copy %[[WL]], %arg4
// CHECK-NEXT: return
fwp.scan @old_state_as_output seq(%k : vector<8xf32>, %v : vector<8xf32>, %g : vector<8xf32>)
    states(%W : !fwp.fast_weight<8x8xf32>)
    outputs(y : vector<8xf32>, tape.W.prev : !fwp.fast_weight<8x8xf32>) {
  %Wd = fwp.scale_rows %W, %g : !fwp.fast_weight<8x8xf32>, vector<8xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<8x8xf32>, vector<8xf32>, vector<8xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<8x8xf32>, vector<8xf32> -> vector<8xf32>
  fwp.yield %W1, %y, %W : !fwp.fast_weight<8x8xf32>, vector<8xf32>, !fwp.fast_weight<8x8xf32>
}

// A delta write after another write of the same weight: its retrieval
// G1 k joins the first write's sweep (the rows as that write leaves them),
// so the step makes two passes over the rows (three loops with the time
// loop), not three passes (a separate read pass for the retrieval). The backward of every delta rule has this pair
// (the adjoint's q (x) dy, then the adjoint of the delta write).
// CHECK-LABEL: func.func @write_then_delta
// CHECK-COUNT-3: scf.for
// CHECK-NOT: scf.for
// CHECK: return
fwp.scan @write_then_delta seq(%q : vector<16xf32>, %g : vector<16xf32>, %k : vector<16xf32>, %b : f32)
    states(%G : !fwp.fast_weight<16x16xf32>) outputs(u : vector<16xf32>) {
  %G1 = fwp.write_sum %G, %q, %g : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %zero = fwp.constant 0.0 : vector<16xf32>
  %G2, %u = fwp.write_delta %G1, %k, %zero, %b : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  fwp.yield %G2, %u : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
