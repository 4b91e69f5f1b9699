// --emit=ptx without ptxas: the per-kernel files, the default folder, and an
// -o that names a file.
// RUN: rm -rf %t && mkdir %t && cd %t
// RUN: fwp-compile %models/rdn.mlir --emit=ptx
// RUN: ls rdn_ptx | FileCheck %s
// RUN: FileCheck %s --check-prefix=FORWARD < rdn_ptx/rdn_kernel.ptx
// RUN: touch a_file
// RUN: not fwp-compile %models/rdn.mlir --emit=ptx -o a_file 2>&1 | FileCheck %s --check-prefix=FILE

// CHECK: kernels.json
// CHECK: rdn_grad_kernel.ptx
// CHECK: rdn_kernel.ptx
// CHECK: rdn_train_kernel.ptx

// FORWARD-COUNT-1: .version
// FORWARD: .entry rdn_kernel(
// FORWARD-NOT: .entry

// FILE: error: --emit=ptx writes one file per kernel into a folder, and 'a_file' is a file
