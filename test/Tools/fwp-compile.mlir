// RUN: fwp-compile %models/delta_net.mlir --emit=manifest -o - | FileCheck %s
// RUN: fwp-compile %models/delta_mlp.mlir --dim d=8 --dim d_ff=24 --emit=manifest -o - | FileCheck %s --check-prefix=MLP
// RUN: fwp-compile %models/rdn.mlir --emit=mlir -o - | FileCheck %s --check-prefix=MLIR
// RUN: fwp-compile %models/rdn.mlir --emit=llvm -o - | FileCheck %s --check-prefix=LLVM
// RUN: fwp-compile %models/rdn.mlir --emit=obj -o %t.o
// RUN: llvm-nm %t.o | FileCheck %s --check-prefix=SYMBOLS
// The artifact is a container (docs/design.md): magic, then the sections.
// RUN: fwp-compile %models/rdn.mlir -o %t.fwpk
// RUN: head -c 5 %t.fwpk | tail -c 4 | FileCheck %s --check-prefix=MAGIC
// --cpu: one image per processor, in the order given; a repeat is skipped.
// RUN: fwp-compile %models/rdn.mlir --cpu=x86-64-v2,x86-64-v4 --emit=manifest -o - | FileCheck %s --check-prefix=TARGET
// RUN: fwp-compile %models/rdn.mlir --cpu=x86-64-v3,x86-64-v3 --cuda=off -o %t.one.fwpk
// RUN: grep -a '"name": "cpu\.' %t.one.fwpk | FileCheck %s --check-prefix=ONE
// RUN: fwp-compile %models/rdn.mlir --cpu=x86-64,x86-64-v4 --cuda=off -o %t.two.fwpk
// RUN: grep -a '"name": "cpu\.' %t.two.fwpk | FileCheck %s --check-prefix=TWO

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
// CHECK: "name": "tape.W.0.delta"
// The default --cpu=native,x86-64-v3: this machine's processor, then x86-64-v3.
// CHECK: "targets": [
// CHECK: "cpu": "{{[a-z0-9-]+}}",
// CHECK: "section": "cpu.{{[a-z0-9-]+}}",
// CHECK-NEXT: "triple": "x86_64-unknown-linux-gnu"
// CHECK: "cpu": "x86-64-v3",
// CHECK-NEXT: "features": [
// CHECK: "avx2",
// CHECK: "section": "cpu.x86-64-v3",
// CHECK-NEXT: "triple": "x86_64-unknown-linux-gnu"
// CHECK: "version": 3

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

// TARGET: "targets": [
// TARGET: "cpu": "x86-64-v2",
// TARGET-NOT: "avx2"
// TARGET: "section": "cpu.x86-64-v2",
// TARGET: "cpu": "x86-64-v4",
// TARGET: "avx512f",
// TARGET: "section": "cpu.x86-64-v4",

// The container's "sections" list each image (the manifests the images
// carry list no CPU section).
// ONE: "name": "cpu.x86-64-v3",
// ONE-NOT: "name"
// TWO: "name": "cpu.x86-64",
// TWO-NEXT: "name": "cpu.x86-64-v4",
// TWO-NOT: "name"
