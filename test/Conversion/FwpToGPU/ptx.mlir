// The whole GPU path: fwp -> gpu -> NVVM -> PTX (LLVM's NVPTX back end; no
// CUDA needed). One gpu.binary per scan holds the PTX text.
// RUN: fwp-opt %models/delta_net.mlir --fwp-differentiate --fwp-gpu-to-ptx | FileCheck %s
// RUN: fwp-opt %models/delta_net.mlir --fwp-gpu-to-ptx="chip=sm_80 block-size=64" | FileCheck %s --check-prefix=SM80

// CHECK: gpu.binary @delta_net_gpu [#gpu.object<#nvvm.target<O = 3, chip = "sm_90", features = "+ptx80">
// CHECK-SAME: .version 8.0
// CHECK-SAME: .target sm_90
// The vectors' shared memory is the launch's dynamic shared memory.
// CHECK-SAME: .extern .shared .align 16 .b8 fwp_shared[];
// CHECK-SAME: .visible .entry delta_net_kernel(
// CHECK-SAME: .maxntid 32, 1, 1
// Column reductions are butterfly shuffles; barriers are bar.sync.
// CHECK-SAME: shfl.sync.bfly.b32
// CHECK-SAME: bar.sync
// The PTX is self-contained: no libdevice call is left to resolve.
// CHECK-NOT: __nv_
// CHECK-NOT: .extern .func
// CHECK: gpu.binary @delta_net_train_gpu
// CHECK-SAME: .visible .entry delta_net_train_kernel(
// CHECK: gpu.binary @delta_net_grad_gpu
// CHECK-SAME: .visible .entry delta_net_grad_kernel(

// SM80: chip = "sm_80"
// SM80-SAME: .target sm_80
// SM80-SAME: .maxntid 64, 1, 1
