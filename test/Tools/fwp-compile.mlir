// RUN: fwp-compile %models/delta_net.mlir --emit=manifest -o - | FileCheck %s
// RUN: fwp-compile %models/delta_mlp.mlir --dim d=8 --dim d_ff=24 --emit=manifest -o - | FileCheck %s --check-prefix=MLP
// RUN: fwp-compile %models/rdn.mlir --emit=mlir -o - | FileCheck %s --check-prefix=MLIR
// RUN: fwp-compile %models/rdn.mlir --emit=llvm -o - | FileCheck %s --check-prefix=LLVM
// RUN: fwp-compile %models/rdn.mlir --emit=obj -o %t.o
// RUN: llvm-nm %t.o | FileCheck %s --check-prefix=SYMBOLS
// The artifact is a container (docs/design.md): magic, then the sections.
// RUN: fwp-compile %models/rdn.mlir -o %t.fwpk
// RUN: head -c 5 %t.fwpk | tail -c 4 | FileCheck %s --check-prefix=MAGIC
// RUN: fwp-compile %models/rdn.mlir --cpu=x86-64-v2 --emit=manifest -o - | FileCheck %s --check-prefix=TARGET

// Keys are printed sorted.
// CHECK: "dims": {
// CHECK-NEXT: "d": 16
// CHECK: "dtype": "f32"
// CHECK: "format": "fwpk"
// CHECK: "kernels": {
// CHECK: "backward": {
// CHECK: "role": "seq"
// CHECK: "role": "grad_output"
// CHECK: "role": "tape"
// CHECK: "role": "state"
// CHECK: "role": "grad_state"
// CHECK: "role": "grad_seq"
// CHECK: "symbol": "fwp_delta_net_grad"
// CHECK: "forward": {
// CHECK: "symbol": "fwp_delta_net"
// CHECK: "forward_train": {
// CHECK: "symbol": "fwp_delta_net_train"
// CHECK: "layer": "delta_net"
// CHECK: "tape": [
// CHECK: "name": "tape.W.0.key"
// CHECK: "target": {
// CHECK: "cpu": "x86-64-v3",
// CHECK: "features": [
// CHECK: "avx2",
// CHECK: "triple": "x86_64-unknown-linux-gnu"
// CHECK: "version": 2

// MLP: "d": 8,
// MLP-NEXT: "d_ff": 24
// MLP: "states": [
// MLP: "name": "W1",
// MLP-NEXT: "shape": [
// MLP-NEXT: 8,
// MLP-NEXT: 24

// MLIR: fwp.scan @rdn_grad reverse

// LLVM: @fwp_manifest = {{.*}}constant
// LLVM: define void @fwp_rdn_grad(i64 %0, ptr

// SYMBOLS-DAG: T fwp_rdn
// SYMBOLS-DAG: T fwp_rdn_train
// SYMBOLS-DAG: T fwp_rdn_grad
// SYMBOLS-DAG: R fwp_manifest

// MAGIC: FWPK

// TARGET: "cpu": "x86-64-v2",
// TARGET-NOT: "avx2"
// TARGET: "triple"
