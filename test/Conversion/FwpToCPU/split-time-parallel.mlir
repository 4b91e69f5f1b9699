// RUN: fwp-opt %s --convert-fwp-to-cpu --canonicalize | FileCheck %s
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu --canonicalize | FileCheck %s

// A split scan (fwp.phase, as fwp-split-time-parallel marks it) runs its
// time loop (here counting down) in blocks of 16 steps, each block three
// loops: the prologue of its steps, the steps one by one, their epilogue.
// Values pass between them through [T, n] buffers (a block's rows stay in
// the caches): an output's own buffer where the value is an output, else a
// heap scratch buffer of T rows. What depends on params alone is computed
// once, first.
// CHECK-LABEL: func.func @split
// CHECK-SAME: (%[[T:.*]]: index, %[[K:.*]]: memref<?x2xf32>, %[[X:.*]]: memref<?xf32>, %[[S:.*]]: memref<1xf32>, %[[W:.*]]: memref<2x2xf32>, %[[PHI:.*]]: memref<?x2xf32>, %[[Z:.*]]: memref<?x2xf32>)
// The param's sigmoid, once.
// CHECK: %[[SV:.*]] = memref.load %[[S]]
// CHECK: %[[GATE:.*]] = arith.divf
// CHECK: %[[KA:.*]] = memref.alloc(%[[T]]) : memref<?x2xf32>
// CHECK: %[[R:.*]] = memref.alloc(%[[T]]) : memref<?x2xf32>
// The 2x2 state runs the loop in a stack copy (fwp-to-cpu.mlir, @lt).
// CHECK: %[[WL:.*]] = memref.alloca() : memref<2x2xf32>
// CHECK: memref.copy %[[W]], %[[WL]]
// CHECK: scf.for %[[FIRST:.*]] = %{{.*}} to %[[T]] step %c16 {
// CHECK: %[[NEXT:.*]] = arith.addi %[[FIRST]], %c16
// CHECK: %[[END:.*]] = arith.minsi %[[NEXT]], %[[T]]
// The prologue: phi(k) into the output buffer, phi(k) x gate into scratch.
// It first prefetches the row of k 16 steps on (here down, clamped at 0):
// the next block's; x, a scalar per step, is not fetched.
// CHECK: scf.for %[[I0:.*]] = %[[FIRST]] to %[[END]] step %c1 {
// CHECK-NOT: %[[WL]]
// CHECK: %[[P:.*]] = arith.subi %{{.*}}, %[[I0]]
// CHECK: %[[AHEAD:.*]] = arith.subi %[[P]], %c16
// CHECK: %[[ROW:.*]] = arith.maxsi %[[AHEAD]], %c0
// CHECK: memref.prefetch %[[K]][%[[ROW]], %c0], read, locality<3>, data
// CHECK-NOT: memref.prefetch
// CHECK: vector.load %[[K]][%[[P]], %{{.*}}]
// CHECK: memref.load %[[X]][%[[P]]]
// CHECK: arith.mulf %{{.*}}, %[[GATE]]
// CHECK: vector.store %{{.*}}, %[[KA]][%[[P]], %{{.*}}]
// CHECK: vector.store %{{.*}}, %[[PHI]][%[[P]], %{{.*}}]
// CHECK: }
// The steps read them back and store the read for the epilogue.
// CHECK: scf.for %[[I:.*]] = %[[FIRST]] to %[[END]] step %c1 {
// CHECK: %[[TT:.*]] = arith.subi %{{.*}}, %[[I]]
// CHECK-NOT: %[[K]]
// CHECK-DAG: vector.load %[[PHI]][%[[TT]], %{{.*}}]
// CHECK-DAG: vector.load %[[KA]][%[[TT]], %{{.*}}]
// CHECK: vector.store %{{.*}}, %[[WL]]
// CHECK: vector.store %{{.*}}, %[[R]][%[[TT]], %{{.*}}]
// CHECK: }
// The epilogue: z = tanh(r) per step.
// CHECK: scf.for %[[I2:.*]] = %[[FIRST]] to %[[END]] step %c1 {
// CHECK-NOT: %[[WL]]
// CHECK: %[[E:.*]] = arith.subi %{{.*}}, %[[I2]]
// CHECK: vector.load %[[R]][%[[E]], %{{.*}}]
// CHECK: math.tanh
// CHECK: vector.store %{{.*}}, %[[Z]][%[[E]], %{{.*}}]
// CHECK: }
// CHECK: }
// CHECK: memref.copy %[[WL]], %[[W]]
// CHECK-DAG: memref.dealloc %[[KA]]
// CHECK-DAG: memref.dealloc %[[R]]
// CHECK: return
fwp.scan @split reverse dims(d = 2) seq(%k : vector<2xf32>, %x : f32) params(%s : f32)
    states(%W : !fwp.fast_weight<2x2xf32>) outputs(phi : vector<2xf32>, z : vector<2xf32>) {
  %gate = fwp.sigmoid %s {fwp.phase = "prologue"} : f32
  %k1 = fwp.elu_plus_one %k {fwp.phase = "prologue"} : vector<2xf32>
  %phi = fwp.sum_norm %k1 {fwp.phase = "prologue"} : vector<2xf32>
  %a = fwp.mul %x, %gate {fwp.phase = "prologue"} : f32
  %ka = fwp.scale %phi, %a {fwp.phase = "prologue"} : vector<2xf32>
  %W1 = fwp.write_sum %W, %phi, %ka : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %r = fwp.read %W1, %phi : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  %z = fwp.tanh %r {fwp.phase = "epilogue"} : vector<2xf32>
  fwp.yield %W1, %phi, %z : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
}

// Counting up, the row 16 steps on is clamped at T - 1. A row of 32 f32 is
// two cache lines (two prefetches); v, which only the steps read, is
// fetched too, an input no loop reads is not.
// CHECK-LABEL: func.func @prefetch_forward
// CHECK-SAME: (%[[T:.*]]: index, %[[K:.*]]: memref<?x32xf32>, %[[V:.*]]: memref<?x32xf32>, %[[U:.*]]: memref<?x32xf32>,
// CHECK: scf.for %[[I:.*]] = %{{.*}} to %{{.*}} step %c1 {
// CHECK-DAG: %[[LAST:.*]] = arith.subi %[[T]], %c1
// CHECK-DAG: %[[AHEAD:.*]] = arith.addi %[[I]], %c16
// CHECK: %[[ROW:.*]] = arith.minsi %[[AHEAD]], %[[LAST]]
// CHECK-NEXT: memref.prefetch %[[K]][%[[ROW]], %c0], read, locality<3>, data
// CHECK-NEXT: memref.prefetch %[[K]][%[[ROW]], %c16], read, locality<3>, data
// CHECK-NEXT: memref.prefetch %[[V]][%[[ROW]], %c0], read, locality<3>, data
// CHECK-NEXT: memref.prefetch %[[V]][%[[ROW]], %c16], read, locality<3>, data
// CHECK-NEXT: vector.load %[[K]][%[[I]], %c0]
// CHECK-NOT: %[[U]]
// CHECK: return
fwp.scan @prefetch_forward dims(d = 32)
    seq(%k : vector<32xf32>, %v : vector<32xf32>, %unused : vector<32xf32>)
    states(%W : !fwp.fast_weight<32x32xf32>) outputs(y : vector<32xf32>) {
  %phi = fwp.elu_plus_one %k {fwp.phase = "prologue"} : vector<32xf32>
  %W1 = fwp.write_sum %W, %phi, %v : !fwp.fast_weight<32x32xf32>, vector<32xf32>, vector<32xf32>
  %y = fwp.read %W1, %phi : !fwp.fast_weight<32x32xf32>, vector<32xf32> -> vector<32xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<32x32xf32>, vector<32xf32>
}

// f64: eight per cache line.
// CHECK-LABEL: func.func @prefetch_f64
// CHECK-SAME: (%{{.*}}: index, %[[K:.*]]: memref<?x16xf64>,
// CHECK: memref.prefetch %[[K]][%[[ROW:.*]], %c0], read, locality<3>, data
// CHECK-NEXT: memref.prefetch %[[K]][%[[ROW]], %c8], read, locality<3>, data
// CHECK-NEXT: vector.load %[[K]]
fwp.scan @prefetch_f64 dims(d = 16)
    seq(%k : vector<16xf64>)
    states(%W : !fwp.fast_weight<16x16xf64>) outputs(y : vector<16xf64>) {
  %phi = fwp.elu_plus_one %k {fwp.phase = "prologue"} : vector<16xf64>
  %W1 = fwp.write_sum %W, %phi, %phi : !fwp.fast_weight<16x16xf64>, vector<16xf64>, vector<16xf64>
  %y = fwp.read %W1, %phi : !fwp.fast_weight<16x16xf64>, vector<16xf64> -> vector<16xf64>
  fwp.yield %W1, %y : !fwp.fast_weight<16x16xf64>, vector<16xf64>
}
