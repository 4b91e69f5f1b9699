// With ptxas installed, the artifact also carries a cubin per kernel.
// REQUIRES: ptxas
// RUN: fwp-compile %models/rdn.mlir -o %t.fwpk
// RUN: llvm-nm -D %t.fwpk | FileCheck %s
// RUN: fwp-compile %models/rdn.mlir --emit=manifest -o - | FileCheck %s --check-prefix=MANIFEST

// CHECK-DAG: R fwp_cubin_rdn_kernel
// CHECK-DAG: R fwp_cubin_rdn_train_kernel
// CHECK-DAG: R fwp_cubin_rdn_grad_kernel

// MANIFEST: "cubin_bytes": {{[1-9][0-9]*}}
// MANIFEST: "cubin_symbol": "fwp_cubin_rdn_grad_kernel"
