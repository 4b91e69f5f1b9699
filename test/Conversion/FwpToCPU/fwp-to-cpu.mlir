// RUN: fwp-opt %s --convert-fwp-to-cpu --canonicalize | FileCheck %s

// A scan becomes a function over one (batch, head): T, then the seq, param,
// state and output buffers.
// CHECK-LABEL: func.func @lt
// CHECK-SAME: (%{{.*}}: index, %[[K:.*]]: memref<?x4xf32>, %[[V:.*]]: memref<?x3xf32>, %[[B:.*]]: memref<?xf32>, %[[W:.*]]: memref<4x3xf32>, %[[H:.*]]: memref<3xf32>, %[[Y:.*]]: memref<?x3xf32>)
// CHECK-SAME: attributes {llvm.emit_c_interface}
// The vector state is read once, carried through the loop, stored at the end.
// CHECK: %[[H0:.*]] = vector.load %[[H]][%{{.*}}] : memref<3xf32>, vector<3xf32>
// A matrix state that fits in half the vector registers (all matrix states
// together at most 1 KiB: 16 AVX-512 registers) runs the loop in a stack
// copy, which LLVM keeps in registers once it has unrolled the row loops
// (the argument buffer may alias the others, so it would load and store
// the rows at every step); the copy goes back at the end.
// CHECK: %[[WL:.*]] = memref.alloca() : memref<4x3xf32>
// CHECK: memref.copy %[[W]], %[[WL]]
// CHECK: %[[LOOP:.*]] = scf.for %[[T:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[HI:.*]] = %[[H0]]) -> (vector<3xf32>)
// CHECK: vector.load %[[K]][%[[T]], %{{.*}}] : memref<?x4xf32>, vector<4xf32>
// CHECK: memref.load %[[B]][%[[T]]] : memref<?xf32>
// The write updates the state buffer in place, row by row (W[e, :] += k[e] v,
// k[e] from a stack copy of k), and the read of the new value shares that
// pass over the rows (4 rows: the row loop is unrolled by canonicalize).
// CHECK: vector.load %[[WL]][%{{.*}}, %{{.*}}] : memref<4x3xf32>, vector<3xf32>
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<4xf32>
// CHECK: %[[ROW:.*]] = vector.fma
// CHECK: vector.fma %[[ROW]]
// CHECK: vector.store %[[ROW]], %[[WL]][%{{.*}}, %{{.*}}] : memref<4x3xf32>, vector<3xf32>
// CHECK: vector.store %{{.*}}, %[[Y]][%[[T]], %{{.*}}] : memref<?x3xf32>, vector<3xf32>
// CHECK: scf.yield
// CHECK: vector.store %[[LOOP]], %[[H]][%{{.*}}] : memref<3xf32>, vector<3xf32>
// CHECK: memref.copy %[[WL]], %[[W]]
fwp.scan @lt seq(%k : vector<4xf32>, %v : vector<3xf32>, %b : f32)
    states(%W : !fwp.fast_weight<4x3xf32>, %h : vector<3xf32>) outputs(y : vector<3xf32>) {
  %v2 = fwp.scale %v, %b : vector<3xf32>
  %W1 = fwp.write_sum %W, %k, %v2 : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<3xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<4x3xf32>, vector<4xf32> -> vector<3xf32>
  %h1 = fwp.add %h, %y : vector<3xf32>
  fwp.yield %W1, %h1, %y : !fwp.fast_weight<4x3xf32>, vector<3xf32>, vector<3xf32>
}

// A reverse scan counts time down. The read of the old W is scheduled before
// the write (reads go as early as their operands allow) and shares its pass
// over the rows, reading each row before it is updated; so the write updates
// the state buffer in place: no scratch matrix, no copy.
// CHECK-LABEL: func.func @rev
// CHECK-SAME: %[[W:[^:]*]]: memref<2x2xf32>
// CHECK-NOT: memref.alloc(
// CHECK: %[[WL:.*]] = memref.alloca() : memref<2x2xf32>
// CHECK: scf.for %[[I:.*]] =
// CHECK: %[[LAST:.*]] = arith.subi %{{.*}}, %{{.*}} : index
// CHECK-NEXT: %[[T:.*]] = arith.subi %[[LAST]], %[[I]] : index
// CHECK: %[[ROW:.*]] = vector.load %[[WL]]
// CHECK: vector.fma %[[ROW]]
// CHECK: %[[NEW:.*]] = vector.fma %{{.*}}, %{{.*}}, %[[ROW]]
// CHECK: vector.store %[[NEW]], %[[WL]]
// CHECK-NOT: memref.copy
// CHECK: memref.copy %[[WL]], %[[W]]
// CHECK-NEXT: return
fwp.scan @rev reverse seq(%k : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %W1 = fwp.write_sum %W, %k, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}

// A param matrix is never written in place: the write goes to a scratch matrix.
// CHECK-LABEL: func.func @param_write
// CHECK-SAME: %[[R:[^:]*]]: memref<2x2xf32>
// CHECK: %[[S:.*]] = memref.alloc() : memref<2x2xf32>
// CHECK-NOT: vector.store %{{.*}}, %[[R]]
// CHECK: vector.store %{{.*}}, %[[S]]
// CHECK-NOT: vector.store %{{.*}}, %[[R]]
// CHECK: return
fwp.scan @param_write seq(%k : vector<2xf32>) params(%R : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %R1 = fwp.write_sum %R, %k, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %R1, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %y : vector<2xf32>
}

// A fast-weight constant is a scratch matrix, allocated once before the loop
// (freed after it) and filled with its value row by row every step; the write
// then updates that matrix in place.
// CHECK-LABEL: func.func @matrix_constant
// CHECK-DAG: %[[HALF:.*]] = arith.constant dense<5.000000e-01> : vector<3xf32>
// CHECK-DAG: %[[C:.*]] = memref.alloc() : memref<2x3xf32>
// CHECK: scf.for
// CHECK: scf.for %[[E:.*]] =
// CHECK: vector.store %[[HALF]], %[[C]][%[[E]], %{{.*}}] : memref<2x3xf32>, vector<3xf32>
// CHECK: vector.fma
// CHECK: vector.store %{{.*}}, %[[C]][%{{.*}}, %{{.*}}] : memref<2x3xf32>, vector<3xf32>
// CHECK: memref.dealloc %[[C]] : memref<2x3xf32>
fwp.scan @matrix_constant seq(%k : vector<2xf32>, %v : vector<3xf32>) outputs(y : vector<3xf32>) {
  %C = fwp.constant 0.5 : !fwp.fast_weight<2x3xf32>
  %C1 = fwp.write_sum %C, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %C1, %k : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  fwp.yield %y : vector<3xf32>
}

// The slope of elu+1 is min(y, 1) of the map's value y (1 where x > 0,
// e^x = y elsewhere): the gradient computes no exp of its own.
// CHECK-LABEL: func.func @elu_grad_from_the_map
// CHECK: scf.for
// CHECK: %[[E:.*]] = math.exp
// CHECK: %[[MAP:.*]] = arith.select %{{.*}}, %{{.*}}, %[[E]]
// CHECK-NOT: math.exp
// CHECK: %[[SUM:.*]] = arith.addf %[[MAP]]
// CHECK: %[[SLOPE:.*]] = arith.minimumf %[[MAP]], %{{.*}} : vector<16xf32>
// CHECK: arith.mulf %[[SUM]], %[[SLOPE]]
// CHECK-NOT: math.exp
// CHECK: return
fwp.scan @elu_grad_from_the_map seq(%x : vector<16xf32>)
    states(%h : vector<16xf32>) outputs(y : vector<16xf32>, dx : vector<16xf32>) {
  %e = fwp.elu_plus_one %x : vector<16xf32>
  %s = fwp.add %e, %h : vector<16xf32>
  %d = fwp.elu_plus_one_grad %e, %s : vector<16xf32>
  fwp.yield %s, %s, %d : vector<16xf32>, vector<16xf32>, vector<16xf32>
}

// Matrix states are kept in registers while the scan's matrices fit in
// 1 KiB: of two 16x16 f32 states (1 KiB each, as a backward's weight and
// its adjoint; both would take all 32 AVX-512 registers) the first runs in
// a copy, the second in its buffer.
// CHECK-LABEL: func.func @states_beyond_the_registers
// CHECK-SAME: %[[A:[^:]*]]: memref<16x16xf32>, %[[B:[^:]*]]: memref<16x16xf32>
// CHECK: %[[AL:.*]] = memref.alloca() : memref<16x16xf32>
// CHECK-NEXT: memref.copy %[[A]], %[[AL]]
// CHECK-NOT: memref.alloca() : memref<16x16xf32>
// CHECK: vector.store %{{.*}}, %[[AL]]
// CHECK: vector.store %{{.*}}, %[[B]]
// CHECK: memref.copy %[[AL]], %[[A]]
// CHECK-NEXT: return
fwp.scan @states_beyond_the_registers seq(%k : vector<16xf32>)
    states(%A : !fwp.fast_weight<16x16xf32>, %B : !fwp.fast_weight<16x16xf32>)
    outputs(y : vector<16xf32>) {
  %A1 = fwp.write_sum %A, %k, %k : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %B1 = fwp.write_sum %B, %k, %k : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y = fwp.read %A1, %k : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %A1, %B1, %y : !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, vector<16xf32>
}

// A matrix per step (the tape of a stored or checkpointed backward) takes
// registers while the step reads it: with it, a 16x16 state no longer fits.
// CHECK-LABEL: func.func @matrix_per_step_fills_the_registers
// CHECK-NOT: memref.alloca() : memref<16x16xf32>
// CHECK-NOT: memref.copy
// CHECK: return
fwp.scan @matrix_per_step_fills_the_registers
    seq(%k : vector<16xf32>, %tape.W.prev : !fwp.fast_weight<16x16xf32>)
    states(%A : !fwp.fast_weight<16x16xf32>) outputs(y : vector<16xf32>) {
  %A1 = fwp.write_sum %A, %k, %k : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %r = fwp.read %tape.W.prev, %k : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %y = fwp.read %A1, %r : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %A1, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
