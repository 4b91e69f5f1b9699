// With ptxas installed, the artifact also carries a cubin per kernel.
// REQUIRES: ptxas
// RUN: fwp-compile %models/rdn.mlir --emit=manifest -o - | FileCheck %s
// RUN: fwp-compile %models/rdn.mlir --emit=manifest -o - | FileCheck %s --check-prefix=MANIFEST

// CHECK-DAG: "name": "fwp_cubin_rdn_kernel"
// CHECK-DAG: "name": "fwp_cubin_rdn_train_kernel"
// CHECK-DAG: "name": "fwp_cubin_rdn_grad_kernel"
// CHECK-DAG: "kind": "cubin"

// MANIFEST: "cubin_bytes": {{[1-9][0-9]*}}
// MANIFEST: "cubin_symbol": "fwp_cubin_rdn_grad_kernel"
