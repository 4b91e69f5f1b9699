// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=16 --canonicalize | FileCheck %s
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=16 | FileCheck %s --check-prefix=NOSTORE
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=12 --canonicalize | FileCheck %s --check-prefix=ODD

// The chunkwise form's transposed copies (ChunkwiseScan.cpp,
// storeTransposed): where the chunk and the rows are whole 16 x 16 f32
// tiles, the chunk's keys ([K, C]) and a transposed read's queries ([V, C])
// go to their transposed buffers a tile at a time, 16 rows loaded, 4 rounds
// of 16 shuffles, 16 vector stores; the transposed read's [K, C] products
// go to its [C, K] results likewise. No element is stored alone.
// CHECK-LABEL: func.func @sum_and_transposed_read
// CHECK-SAME: fwp.chunk = 16
// CHECK: scf.for %[[START:.*]] = %{{.*}} to %arg0 step %c16 {
// CHECK: %[[LEN:.*]] = arith.minsi
// The queries, then the keys (rows past a short chunk: its last step's).
// CHECK: %[[LAST:.*]] = arith.subi %[[LEN]], %c1
// CHECK: arith.minsi %[[LAST]], %c0
// CHECK-COUNT-64: vector.shuffle
// CHECK-COUNT-16: vector.store %{{.*}}, %[[QT:.*]][%c{{[0-9]+}}, %c0] : memref<16x16xf32>, vector<16xf32>
// CHECK-COUNT-64: vector.shuffle
// CHECK-COUNT-16: vector.store %{{.*}}, %[[KT:.*]][%c{{[0-9]+}}, %c0] : memref<16x16xf32>, vector<16xf32>
// The products S X^T + K^T (W X^T), then to the results.
// CHECK: vector.fma
// CHECK-COUNT-64: vector.shuffle
// CHECK: return
// NOSTORE-NOT: memref.store
// ODD-LABEL: func.func @sum_and_transposed_read
// ODD-SAME: fwp.chunk = 12
// ODD-NOT: vector.shuffle
// ODD: memref.store
// ODD-NOT: vector.shuffle
// ODD: return
fwp.scan @sum_and_transposed_read seq(%k : vector<16xf32>, %v : vector<16xf32>,
                                      %x : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x16xf32>) outputs(y : vector<16xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y = fwp.read_transposed %W1, %x : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
