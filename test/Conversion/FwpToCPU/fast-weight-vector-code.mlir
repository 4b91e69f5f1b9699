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
// CHECK: %[[SUMS:.*]] = memref.alloca() : memref<4xf32>
// CHECK: scf.for %{{.*}} =
// CHECK: scf.for %[[E:.*]] =
// CHECK: vector.reduction <add>
// CHECK: memref.store %{{.*}}, %[[SUMS]][%[[E]]] : memref<4xf32>
// CHECK: vector.load %[[SUMS]][%{{.*}}] : memref<4xf32>, vector<4xf32>
fwp.scan @read_transposed_odd seq(%x : vector<3xf32>)
    states(%W : !fwp.fast_weight<4x3xf32>) outputs(y : vector<4xf32>) {
  %y = fwp.read_transposed %W, %x : !fwp.fast_weight<4x3xf32>, vector<3xf32> -> vector<4xf32>
  fwp.yield %W, %y : !fwp.fast_weight<4x3xf32>, vector<4xf32>
}
