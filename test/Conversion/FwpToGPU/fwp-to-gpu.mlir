// RUN: fwp-opt %s --split-input-file --convert-fwp-to-gpu | FileCheck %s
// RUN: fwp-opt %s --split-input-file --convert-fwp-to-gpu=block-size=64 | FileCheck %s --check-prefix=B64

// One kernel per scan: the buffers (seq, params, states, outputs) as
// pointers, then B, H, T; its ABI is recorded on the kernel.
// CHECK: module attributes {gpu.container_module}
// CHECK-LABEL: gpu.module @lt_gpu
// Dynamic shared memory (vectors live there): a public zero-sized global.
// CHECK: memref.global "public" @fwp_shared : memref<0xf32, #gpu.address_space<workgroup>> {alignment = 16 : i64}
// CHECK: gpu.func @lt_kernel(%[[K:.*]]: !llvm.ptr, %[[V:.*]]: !llvm.ptr, %[[B:.*]]: !llvm.ptr, %[[W:.*]]: !llvm.ptr, %[[H:.*]]: !llvm.ptr, %[[Y:.*]]: !llvm.ptr, %{{.*}}: i64, %{{.*}}: i64, %[[T:.*]]: i64) kernel
// CHECK-SAME: fwp.args = [{name = "k", role = "seq", shape = ["B", "H", -1, 4]}, {name = "v", role = "seq", shape = ["B", "H", -1, 8]}, {name = "b", role = "seq", shape = ["B", "H", -1]}, {name = "W", role = "state", shape = ["B", "H", 4, 8]}, {name = "h", role = "state", shape = ["B", "H", 8]}, {name = "y", role = "output", shape = ["B", "H", -1, 8]}]
// CHECK-SAME: fwp.block_size = 32 : i64, fwp.dtype = "f32", fwp.kernel_role = "forward", fwp.scan = "lt", fwp.shared_bytes = 128 : i64
// CHECK-SAME: known_block_size = array<i32: 32, 1, 1>
// A 4x8 matrix on 32 threads: S = 4 threads per column, s = tid % 4.
// CHECK: %[[TID:.*]] = gpu.thread_id x
// CHECK: %[[S:.*]] = arith.remui %[[TID]], %c4
// CHECK: %[[BH:.*]] = gpu.block_id x
// CHECK: %[[ARENA:.*]] = memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [32], strides: [1] : memref<0xf32, #gpu.address_space<workgroup>> to memref<32xf32, strided<[1]>, #gpu.address_space<workgroup>>
// The matrix state is loaded into registers once...
// CHECK: llvm.getelementptr %[[W]]
// CHECK: %[[W0:.*]] = vector.broadcast %{{.*}} : f32 to vector<1xf32>
// ...the vector state into its shared-memory slot, then one barrier.
// CHECK: llvm.getelementptr %[[H]]
// CHECK: memref.store %{{.*}}, %[[ARENA]][%[[TID]]]
// CHECK-NEXT: }
// CHECK-NEXT: gpu.barrier
// Time is the loop; the matrix is carried in registers.
// CHECK: %[[FINAL:.*]] = scf.for %{{.*}} = %c0 to %{{.*}} step %c1 iter_args(%[[WI:.*]] = %[[W0]]) -> (vector<1xf32>)
// The delta write: the column's dot product reduced over its 4 lanes by
// butterfly shuffles, then an FMA; no barrier needed.
// CHECK-NOT: gpu.barrier
// CHECK: gpu.shuffle xor %{{.*}}, %c2_i32, %c32_i32 : f32
// CHECK: gpu.shuffle xor %{{.*}}, %c1_i32, %c32_i32 : f32
// CHECK: %[[W1:.*]] = vector.fma %{{.*}}, %{{.*}}, %[[WI]] : vector<1xf32>
// The retrieved value is stored by lane s == 0 of each column.
// CHECK: %[[LEAD:.*]] = arith.cmpi eq, %[[S]], %c0
// CHECK: scf.if %[[LEAD]]
// The elementwise add reads values other threads wrote: one barrier.
// CHECK: gpu.barrier
// CHECK: arith.addf
// The output and the new vector state; a barrier before the next step.
// CHECK: llvm.getelementptr %[[Y]]
// CHECK: gpu.barrier
// CHECK-NEXT: scf.yield %[[W1]] : vector<1xf32>
// Final states go back to their (in/out) buffers.
// CHECK: vector.extract %[[FINAL]][0]
// CHECK: llvm.getelementptr %[[H]]
// CHECK: gpu.return
fwp.scan @lt seq(%k : vector<4xf32>, %v : vector<8xf32>, %b : f32)
    states(%W : !fwp.fast_weight<4x8xf32>, %h : vector<8xf32>) outputs(y : vector<8xf32>) {
  %s = fwp.sigmoid %b : f32
  %W1, %vbar = fwp.write_delta %W, %k, %v, %s : !fwp.fast_weight<4x8xf32>, vector<4xf32>, vector<8xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<4x8xf32>, vector<4xf32> -> vector<8xf32>
  %h1 = fwp.add %h, %y : vector<8xf32>
  fwp.yield %W1, %h1, %vbar : !fwp.fast_weight<4x8xf32>, vector<8xf32>, vector<8xf32>
}

// -----

// A reverse scan visits t = T - 1 - i. Params are per head (h = bh % H).
// CHECK-LABEL: gpu.func @back_kernel
// CHECK-SAME: fwp.args = [{name = "g", role = "seq", shape = ["B", "H", -1, 4]}, {name = "p", role = "param", shape = ["H", 4]}, {name = "c", role = "param", shape = ["H", 1]}, {name = "y", role = "output", shape = ["B", "H", -1]}]
// CHECK-SAME: fwp.kernel_role = "forward"
// CHECK: %[[BH:.*]] = gpu.block_id x
// CHECK: arith.remui %[[BH]], %{{.*}} : index
// CHECK: scf.for %[[I:.*]] =
// CHECK: %[[REV:.*]] = arith.subi %{{.*}}, %[[I]] : index
// CHECK: arith.subi %[[REV]], %c1 : index
// A dot product of a seq vector and a param: every warp reduces it with
// shuffles, so no barrier at all.
// CHECK-NOT: gpu.barrier
// CHECK: gpu.shuffle xor %{{.*}}, %c16_i32
// CHECK: gpu.shuffle xor %{{.*}}, %c1_i32
// CHECK-NOT: gpu.barrier
// CHECK: gpu.return
fwp.scan @back reverse seq(%g : vector<4xf32>) params(%p : vector<4xf32>, %c : f32)
    outputs(y : f32) {
  %d = fwp.dot %g, %p : vector<4xf32>
  %y = fwp.mul %d, %c : f32
  fwp.yield %y : f32
}

// -----

// The transposed read reduces over columns: shuffles inside each warp, then
// the warps' partial sums meet in shared memory behind a barrier.
// B64-LABEL: gpu.func @rt_kernel
// B64-SAME: fwp.block_size = 64 : i64
// B64: scf.for
// B64: gpu.shuffle xor %{{.*}}, %c16_i32
// B64: %[[LANE0:.*]] = arith.cmpi ult, %{{.*}}, %c1 : index
// B64: scf.if %[[LANE0]]
// B64: memref.store
// B64: gpu.barrier
// B64: memref.load
// B64: memref.load
// B64: arith.addf
fwp.scan @rt seq(%x : vector<64xf32>) states(%W : !fwp.fast_weight<4x64xf32>)
    outputs(y : vector<4xf32>) {
  %y = fwp.read_transposed %W, %x : !fwp.fast_weight<4x64xf32>, vector<64xf32> -> vector<4xf32>
  fwp.yield %W, %y : !fwp.fast_weight<4x64xf32>, vector<4xf32>
}
