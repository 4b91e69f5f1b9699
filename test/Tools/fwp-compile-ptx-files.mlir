// --emit=ptx writes one PTX module per kernel into a folder, and ptxas
// assembles each file as it is.
// REQUIRES: ptxas
// RUN: rm -rf %t && fwp-compile %models/delta_net.mlir --emit=ptx -o %t
// RUN: ls %t | FileCheck %s --check-prefix=FILES
// RUN: %ptxas -arch=sm_90 %t/delta_net_kernel.ptx -o %t/forward.cubin
// RUN: %ptxas -arch=sm_90 %t/delta_net_train_kernel.ptx -o %t/train.cubin
// RUN: %ptxas -arch=sm_90 %t/delta_net_grad_kernel.ptx -o %t/grad.cubin
// RUN: FileCheck %s --check-prefix=ONE < %t/delta_net_grad_kernel.ptx
// RUN: FileCheck %s --check-prefix=JSON < %t/kernels.json
// The folder holds nothing else than the listed files, so every .ptx was assembled above.
// RUN: ls %t/*.ptx | count 3

// FILES: delta_net_grad_kernel.cubin
// FILES-NEXT: delta_net_grad_kernel.ptx
// FILES-NEXT: delta_net_kernel.cubin
// FILES-NEXT: delta_net_kernel.ptx
// FILES-NEXT: delta_net_train_kernel.cubin
// FILES-NEXT: delta_net_train_kernel.ptx
// FILES-NEXT: kernels.json

// ONE-COUNT-1: .version
// ONE: .target sm_90
// ONE-NOT: .entry delta_net_kernel(
// ONE: .entry delta_net_grad_kernel(
// ONE-NOT: .version

// JSON: "layer": "delta_net"
