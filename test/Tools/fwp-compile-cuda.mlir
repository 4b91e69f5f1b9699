// fwp-compile embeds the CUDA kernels of an f32 layer next to its CPU code.
// RUN: fwp-compile %models/delta_net.mlir --emit=manifest -o - | FileCheck %s
// RUN: fwp-compile %models/delta_net.mlir --emit=ptx -o - | FileCheck %s --check-prefix=PTX
// RUN: fwp-compile %models/delta_net.mlir --cuda-chip=sm_80 --emit=ptx -o - | FileCheck %s --check-prefix=SM80
// RUN: fwp-compile %models/delta_net.mlir --dtype=f64 --emit=manifest -o - | FileCheck %s --check-prefix=NOCUDA
// RUN: fwp-compile %models/delta_net.mlir --cuda=off --emit=manifest -o - | FileCheck %s --check-prefix=NOCUDA
// RUN: not fwp-compile %models/delta_net.mlir --cuda=off --emit=ptx -o - 2>&1 | FileCheck %s --check-prefix=NOPTX
// RUN: fwp-compile %models/rdn.mlir --emit=manifest -o - | FileCheck %s --check-prefix=SECTIONS
// RUN: fwp-compile %models/rdn.mlir --cuda=off --emit=manifest -o - | FileCheck %s --check-prefix=CPUONLY

// CHECK: "kernels": {
// CHECK: "cpu": {
// CHECK: "cuda": {
// CHECK: "backward": {
// CHECK: "block": [
// CHECK: "chip": "sm_90"
// CHECK: "dtype": "f32"
// CHECK: "grid": [
// CHECK-NEXT: "B*H"
// CHECK: "kernel": "delta_net_grad_kernel"
// CHECK: "ptx_symbol": "fwp_ptx_delta_net_grad_kernel"
// CHECK: "scalar_args": [
// CHECK-NEXT: "B",
// CHECK-NEXT: "H",
// CHECK-NEXT: "T"
// CHECK: "forward": {
// CHECK: "kernel": "delta_net_kernel"
// CHECK: "forward_train": {
// CHECK: "kernel": "delta_net_train_kernel"

// PTX: ---- forward: delta_net_kernel (sm_90, block
// PTX: .target sm_90
// PTX: .entry delta_net_kernel(
// PTX: ---- forward_train: delta_net_train_kernel
// PTX: .entry delta_net_train_kernel(
// PTX: ---- backward: delta_net_grad_kernel
// PTX: .entry delta_net_grad_kernel(

// SM80: .target sm_80

// NOCUDA-NOT: "cuda"
// NOCUDA: "layer": "delta_net"

// NOPTX: error: --emit=ptx needs CUDA kernels

// The PTX texts are sections of the container, each with its digest.
// SECTIONS: "sections": [
// SECTIONS: "kind": "ptx",
// SECTIONS-NEXT: "name": "fwp_ptx_rdn_kernel",
// SECTIONS-NEXT: "sha256": "{{[0-9a-f]+}}",
// SECTIONS-NEXT: "size": {{[1-9][0-9]*}}
// SECTIONS: "name": "fwp_ptx_rdn_train_kernel",
// SECTIONS: "name": "fwp_ptx_rdn_grad_kernel",

// CPUONLY-NOT: fwp_ptx
// CPUONLY: "sections": []
// CPUONLY-NOT: fwp_ptx
