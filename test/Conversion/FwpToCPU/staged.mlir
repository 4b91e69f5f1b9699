// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=4 | FileCheck %s
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=0 | FileCheck %s --check-prefix=OFF
// RUN: fwp-opt %s --fwp-split-time-parallel --convert-fwp-to-cpu=chunk=-1 | FileCheck %s --check-prefix=AUTO

// A scan of several fast weights as passes over time of one weight each
// (StagedScan.cpp), each pass chunkwise.

// Two weights, each read with a query from the other's reads: W's first
// pass reads with x (an input), V's pass with W's result, W's second pass
// with V's result. W is rebuilt twice: its first pass starts from a copy of
// its initial value, its last from the buffer itself (which it leaves
// final). The values that cross passes go through [T, n] buffers; y (W's
// second read) is an output, written by the last pass into its own buffer.
// The passes run block by block, 64 steps each (all three passes over a
// block, then the next): the per-step buffers are passed as views of the
// block's rows.
// CHECK-LABEL: func.func private @two_weights__stage0(
// CHECK-SAME: fwp.chunk = 4
// CHECK-LABEL: func.func private @two_weights__stage1(
// CHECK-SAME: fwp.chunk = 4
// CHECK-LABEL: func.func private @two_weights__stage2(
// CHECK-SAME: fwp.chunk = 4
// CHECK-LABEL: func.func @two_weights(
// CHECK-SAME: %[[T:arg0]]: index
// CHECK-SAME: %[[W:arg4]]: memref<4x4xf32>, %[[V:arg5]]: memref<4x4xf32>, %[[Y:arg6]]: memref<?x4xf32>, %[[Z:arg7]]: memref<?x4xf32>
// CHECK-SAME: fwp.chunk = 4 : i64, fwp.stages = 3 : i64
// CHECK-DAG: %[[A:.*]] = memref.alloc(%[[T]]) : memref<?x4xf32>
// CHECK-DAG: %[[B:.*]] = memref.alloc(%[[T]]) : memref<?x4xf32>
// CHECK-DAG: %[[COPY:.*]] = memref.alloc() : memref<4x4xf32>
// CHECK: %[[C64:.*]] = arith.constant 64 : index
// CHECK: memref.copy %[[W]], %[[COPY]]
// CHECK-NEXT: scf.for %[[I:.*]] = %{{.*}} to %[[T]] step %[[C64]] {
// CHECK-NEXT: %[[LEFT:.*]] = arith.subi %[[T]], %[[I]]
// CHECK-NEXT: %[[N:.*]] = arith.minsi %[[C64]], %[[LEFT]]
// CHECK-NEXT: %[[X1:.*]] = memref.subview %arg1[%[[I]], 0] [%[[N]], 4] [1, 1] : memref<?x4xf32> to memref<?x4xf32, strided<[4, 1], offset: ?>>
// CHECK-NEXT: %[[X2:.*]] = memref.subview %arg2[%[[I]], 0] [%[[N]], 4] [1, 1]
// CHECK-NEXT: %[[X3:.*]] = memref.subview %arg3[%[[I]], 0] [%[[N]], 4] [1, 1]
// CHECK-NEXT: %[[AV:.*]] = memref.subview %[[A]][%[[I]], 0] [%[[N]], 4] [1, 1]
// CHECK-NEXT: call @two_weights__stage0(%[[N]], %[[X1]], %[[X2]], %[[X3]], %[[COPY]], %[[AV]])
// CHECK-NEXT: %[[ZV:.*]] = memref.subview %[[Z]][%[[I]], 0] [%[[N]], 4] [1, 1]
// CHECK-NEXT: %[[BV:.*]] = memref.subview %[[B]][%[[I]], 0] [%[[N]], 4] [1, 1]
// CHECK-NEXT: call @two_weights__stage1(%[[N]], %[[X1]], %[[X2]], %[[X3]], %[[AV]], %[[V]], %[[ZV]], %[[BV]])
// CHECK-NEXT: %[[YV:.*]] = memref.subview %[[Y]][%[[I]], 0] [%[[N]], 4] [1, 1]
// CHECK-NEXT: call @two_weights__stage2(%[[N]], %[[X1]], %[[X2]], %[[X3]], %[[BV]], %[[W]], %[[YV]])
// CHECK-NEXT: }
// CHECK: memref.dealloc
// CHECK: return

// Without chunks (and, at this size, automatically) the scan stays one
// recurrent loop.
// OFF-NOT: stage
// OFF-LABEL: func.func @two_weights(
// OFF-NOT: fwp.chunk
// AUTO-NOT: stage
// AUTO-LABEL: func.func @two_weights(
// AUTO-NOT: fwp.chunk
fwp.scan @two_weights seq(%k : vector<4xf32>, %v : vector<4xf32>, %x : vector<4xf32>)
    states(%W : !fwp.fast_weight<4x4xf32>, %V : !fwp.fast_weight<4x4xf32>)
    outputs(y : vector<4xf32>, z : vector<4xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %a = fwp.read %W1, %x : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %V1 = fwp.write_sum %V, %x, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %b = fwp.read_transposed %V1, %a : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %z = fwp.add %b, %a : vector<4xf32>
  %y = fwp.read %W, %b : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  fwp.yield %W1, %V1, %y, %z : !fwp.fast_weight<4x4xf32>, !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
}

// A weight whose reads all take ready queries goes first, so that the other
// one takes all its reads in one pass: V (read with x alone), then W, read
// with x and with V's result (two passes; W first would need W, V, W again,
// as @two_weights does). The first pass starts from V itself: each weight
// is rebuilt once, no copy.
// CHECK-LABEL: func.func @ready_first(
// CHECK-SAME: %[[W:arg4]]: memref<4x4xf32>, %[[V:arg5]]: memref<4x4xf32>
// CHECK-SAME: fwp.chunk = 4 : i64, fwp.stages = 2 : i64
// CHECK-NOT: memref.copy
// CHECK: call @ready_first__stage0({{.*}}, %[[V]],
// CHECK-NOT: call
// CHECK: call @ready_first__stage1({{.*}}, %[[W]],
// CHECK: return
fwp.scan @ready_first seq(%k : vector<4xf32>, %v : vector<4xf32>, %x : vector<4xf32>)
    states(%W : !fwp.fast_weight<4x4xf32>, %V : !fwp.fast_weight<4x4xf32>)
    outputs(y : vector<4xf32>, z : vector<4xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %a = fwp.read %W1, %x : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %V1 = fwp.write_sum %V, %x, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %b = fwp.read_transposed %V1, %x : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %z = fwp.add %b, %a : vector<4xf32>
  %y = fwp.read %W, %b : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  fwp.yield %W1, %V1, %y, %z : !fwp.fast_weight<4x4xf32>, !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
}

// A weight whose update takes a coefficient from a read of another weight
// is updated in a pass after that weight's (W, then V); two weights that
// take coefficients from each other's reads do not split: one recurrent
// loop.
// CHECK-LABEL: func.func @chained(
// CHECK-SAME: fwp.stages = 2
// CHECK: call @chained__stage0
// CHECK-NOT: call
// CHECK: call @chained__stage1
fwp.scan @chained seq(%k : vector<4xf32>, %v : vector<4xf32>)
    states(%W : !fwp.fast_weight<4x4xf32>, %V : !fwp.fast_weight<4x4xf32>)
    outputs(y : vector<4xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %a = fwp.read %W1, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %V1 = fwp.write_sum %V, %a, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %y = fwp.read %V1, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  fwp.yield %W1, %V1, %y : !fwp.fast_weight<4x4xf32>, !fwp.fast_weight<4x4xf32>, vector<4xf32>
}

// CHECK-LABEL: func.func @coupled(
// CHECK-NOT: call
// CHECK-NOT: fwp.stages
// CHECK: return
fwp.scan @coupled seq(%k : vector<4xf32>, %v : vector<4xf32>)
    states(%W : !fwp.fast_weight<4x4xf32>, %V : !fwp.fast_weight<4x4xf32>)
    outputs(y : vector<4xf32>) {
  %a = fwp.read %W, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %b = fwp.read %V, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %W1 = fwp.write_sum %W, %k, %b : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %V1 = fwp.write_sum %V, %k, %a : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %y = fwp.add %a, %b : vector<4xf32>
  fwp.yield %W1, %V1, %y : !fwp.fast_weight<4x4xf32>, !fwp.fast_weight<4x4xf32>, vector<4xf32>
}

// A late group: R is read with a query from the vector state y and its read
// feeds y's next value, so R and y run in one recurrent pass. W (written
// and read with inputs alone) gets a pass before it that computes z for
// all steps; G (written with y's next value, read for an output alone) a
// pass after it that takes y from the output buffer the late pass wrote.
// The split is kept whatever the passes' forms (without chunks too): it
// takes W and G out of the recurrence; but only where the weights together
// outgrow 16 KiB (here 3 x 16 KiB).
// CHECK-LABEL: func.func private @late_group__stage0(
// CHECK-SAME: fwp.chunk = 4
// CHECK-LABEL: func.func private @late_group__stage1(
// CHECK-SAME: %{{.*}}: memref<64x64xf32>, %{{.*}}: memref<64xf32>
// CHECK-LABEL: func.func private @late_group__stage2(
// CHECK-SAME: fwp.chunk = 4
// CHECK-LABEL: func.func @late_group(
// CHECK-SAME: %[[T:arg0]]: index
// CHECK-SAME: %[[W:arg6]]: memref<64x64xf32>, %[[R:arg7]]: memref<64x64xf32>, %[[G:arg8]]: memref<64x64xf32>, %[[Y:arg9]]: memref<64xf32>, %[[YS:arg10]]: memref<?x64xf32>, %[[O:arg11]]: memref<?x64xf32>
// CHECK-SAME: fwp.stages = 3 : i64
// CHECK: %[[Z:.*]] = memref.alloc(%[[T]]) : memref<?x64xf32>
// CHECK-NOT: memref.copy
// CHECK: scf.for %[[I:.*]] = %{{.*}} to %[[T]] step %{{.*}} {
// CHECK: %[[N:.*]] = arith.minsi
// CHECK: %[[ZV:.*]] = memref.subview %[[Z]][%[[I]], 0] [%[[N]], 64]
// CHECK-NEXT: call @late_group__stage0(%[[N]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[W]], %[[ZV]])
// CHECK: %[[YSV:.*]] = memref.subview %[[YS]][%[[I]], 0] [%[[N]], 64]
// CHECK-NEXT: call @late_group__stage1(%[[N]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[ZV]], %[[R]], %[[Y]], %[[YSV]])
// CHECK: %[[OV:.*]] = memref.subview %[[O]][%[[I]], 0] [%[[N]], 64]
// CHECK-NEXT: call @late_group__stage2(%[[N]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[YSV]], %[[G]], %[[OV]])
// CHECK: memref.dealloc %[[Z]]
// CHECK: return
// OFF-LABEL: func.func @late_group(
// OFF-SAME: fwp.stages = 3
// AUTO-LABEL: func.func @late_group(
// AUTO-SAME: fwp.stages = 3
fwp.scan @late_group seq(%q : vector<64xf32>, %k : vector<64xf32>, %v : vector<64xf32>,
                         %k_r : vector<64xf32>, %v_r : vector<64xf32>)
    states(%W : !fwp.fast_weight<64x64xf32>, %R : !fwp.fast_weight<64x64xf32>,
           %G : !fwp.fast_weight<64x64xf32>, %y : vector<64xf32>)
    outputs(y : vector<64xf32>, o : vector<64xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<64x64xf32>, vector<64xf32>, vector<64xf32>
  %z = fwp.read %W1, %q : !fwp.fast_weight<64x64xf32>, vector<64xf32> -> vector<64xf32>
  %R1 = fwp.write_sum %R, %k_r, %v_r : !fwp.fast_weight<64x64xf32>, vector<64xf32>, vector<64xf32>
  %s = fwp.softmax %y : vector<64xf32>
  %rec = fwp.read %R1, %s : !fwp.fast_weight<64x64xf32>, vector<64xf32> -> vector<64xf32>
  %y1 = fwp.add %z, %rec : vector<64xf32>
  %G1 = fwp.write_sum %G, %q, %y1 : !fwp.fast_weight<64x64xf32>, vector<64xf32>, vector<64xf32>
  %o = fwp.read %G1, %k : !fwp.fast_weight<64x64xf32>, vector<64xf32> -> vector<64xf32>
  fwp.yield %W1, %R1, %G1, %y1, %y1, %o : !fwp.fast_weight<64x64xf32>, !fwp.fast_weight<64x64xf32>, !fwp.fast_weight<64x64xf32>, vector<64xf32>, vector<64xf32>, vector<64xf32>
}

// The same at 16 x 16 (3 KiB of weights, all in L1 in one loop): one
// recurrent loop.
// CHECK-LABEL: func.func @small_late_group(
// CHECK-NOT: call
// CHECK-NOT: fwp.stages
// CHECK: return
// OFF-LABEL: func.func @small_late_group(
// OFF-NOT: fwp.stages
fwp.scan @small_late_group seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>,
                               %k_r : vector<16xf32>, %v_r : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x16xf32>, %R : !fwp.fast_weight<16x16xf32>,
           %G : !fwp.fast_weight<16x16xf32>, %y : vector<16xf32>)
    outputs(y : vector<16xf32>, o : vector<16xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %z = fwp.read %W1, %q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %R1 = fwp.write_sum %R, %k_r, %v_r : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %s = fwp.softmax %y : vector<16xf32>
  %rec = fwp.read %R1, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %y1 = fwp.add %z, %rec : vector<16xf32>
  %G1 = fwp.write_sum %G, %q, %y1 : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %o = fwp.read %G1, %k : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W1, %R1, %G1, %y1, %y1, %o : !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
}

// Backwards in time (as the backward scans run): the blocks cover T from
// its end, [max(T - i - 64, 0), T - i), a short block at the start of time.
// CHECK-LABEL: func.func @reverse_two_weights(
// CHECK-SAME: %[[T:arg0]]: index
// CHECK-SAME: fwp.stages = 2
// CHECK: %[[C64:.*]] = arith.constant 64 : index
// CHECK: scf.for %[[I:.*]] = %{{.*}} to %[[T]] step %[[C64]] {
// CHECK-NEXT: %[[END:.*]] = arith.subi %[[T]], %[[I]]
// CHECK-NEXT: %[[BACK:.*]] = arith.subi %[[END]], %[[C64]]
// CHECK-NEXT: %[[FIRST:.*]] = arith.maxsi %[[BACK]], %{{.*}}
// CHECK-NEXT: %[[N:.*]] = arith.subi %[[END]], %[[FIRST]]
// CHECK-NEXT: memref.subview %arg1[%[[FIRST]], 0] [%[[N]], 4] [1, 1]
// CHECK: call @reverse_two_weights__stage0(%[[N]],
// CHECK: call @reverse_two_weights__stage1(%[[N]],
fwp.scan @reverse_two_weights reverse seq(%k : vector<4xf32>, %v : vector<4xf32>)
    states(%W : !fwp.fast_weight<4x4xf32>, %V : !fwp.fast_weight<4x4xf32>)
    outputs(y : vector<4xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %a = fwp.read %W1, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %V1 = fwp.write_sum %V, %a, %v : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %y = fwp.read %V1, %k : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  fwp.yield %W1, %V1, %y : !fwp.fast_weight<4x4xf32>, !fwp.fast_weight<4x4xf32>, vector<4xf32>
}
