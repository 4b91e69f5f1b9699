// RUN: fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d=8,d_ff=32" | FileCheck %s
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d_ff=24" | FileCheck %s --check-prefix=FF
// RUN: not fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=e=8" 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// RUN: not fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d=zero" 2>&1 | FileCheck %s --check-prefix=BAD

// CHECK: fwp.scan @delta_mlp dims(d = 8, d_ff = 32)
// CHECK-NEXT: seq(%q: vector<8xf32>, %k1: vector<8xf32>, %v1: vector<32xf32>, %beta1: f32, %k2: vector<32xf32>, %v2: vector<8xf32>, %beta2: f32)
// CHECK-NEXT: params(%ln_weight: vector<8xf32>, %ln_bias: vector<8xf32>)
// CHECK-NEXT: states(%W1: !fwp.fast_weight<8x32xf32>, %W2: !fwp.fast_weight<32x8xf32>)
// CHECK-NEXT: outputs(y : vector<8xf32>)
// CHECK: fwp.read %{{.*}}, %{{.*}} : !fwp.fast_weight<8x32xf32>, vector<8xf32> -> vector<32xf32>

// FF: fwp.scan @delta_mlp dims(d = 16, d_ff = 24)
// FF: states(%W1: !fwp.fast_weight<16x24xf32>, %W2: !fwp.fast_weight<24x16xf32>)

// UNKNOWN: error: 'fwp.scan' op has no dim named 'e'
// BAD: error: fwp-specialize-dims: expected name=positive-integer, got 'd=zero'

// Sizes change by the dim they stand for, not by their value.
// RUN: fwp-opt %S/Inputs/dpfp-ff.mlir --fwp-specialize-dims="dims=d=8" | FileCheck %s --check-prefix=DPFP-D
// RUN: fwp-opt %S/Inputs/dpfp-ff.mlir --fwp-specialize-dims="dims=d_ff=128" | FileCheck %s --check-prefix=DPFP-FF
// RUN: fwp-opt %S/Inputs/dpfp-ff.mlir --fwp-specialize-dims="dims=d=8,d_ff=16" | FileCheck %s --check-prefix=DPFP-BOTH
// A derived size (2*nu*d of DPFP) follows d, although it equals d_ff; d_ff
// keeps its own sizes.
// DPFP-D: fwp.scan @dpfp_ff dims(d = 8, d_ff = 64)
// DPFP-D-NEXT: seq(%q: vector<8xf32>, %k: vector<8xf32>, %v: vector<8xf32>, %u: vector<64xf32>)
// DPFP-D-NEXT: states(%W: !fwp.fast_weight<32x8xf32>)
// DPFP-D-NEXT: outputs(y : vector<8xf32>, z : vector<64xf32>)
// DPFP-D: fwp.dpfp %{{.*}} nu(2) : vector<8xf32> -> vector<32xf32>
// DPFP-FF: fwp.scan @dpfp_ff dims(d = 16, d_ff = 128)
// DPFP-FF-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>, %u: vector<128xf32>)
// DPFP-FF-NEXT: states(%W: !fwp.fast_weight<64x16xf32>)
// DPFP-FF-NEXT: outputs(y : vector<16xf32>, z : vector<128xf32>)
// DPFP-BOTH: fwp.scan @dpfp_ff dims(d = 8, d_ff = 16)
// DPFP-BOTH-NEXT: seq(%q: vector<8xf32>, %k: vector<8xf32>, %v: vector<8xf32>, %u: vector<16xf32>)
// DPFP-BOTH-NEXT: states(%W: !fwp.fast_weight<32x8xf32>)

// Two dims may end up with one value (d = d_ff = 64 here) ...
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d=64" | FileCheck %s --check-prefix=EQUAL
// EQUAL: fwp.scan @delta_mlp dims(d = 64, d_ff = 64)
// EQUAL: states(%W1: !fwp.fast_weight<64x64xf32>, %W2: !fwp.fast_weight<64x64xf32>)
// ... and such a scan keeps its sizes when both change together, but changing
// one of them alone is ambiguous (the types cannot say which size is which).
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d=64" | fwp-opt --fwp-specialize-dims="dims=d=32,d_ff=32" | FileCheck %s --check-prefix=TOGETHER
// TOGETHER: fwp.scan @delta_mlp dims(d = 32, d_ff = 32)
// TOGETHER: states(%W1: !fwp.fast_weight<32x32xf32>, %W2: !fwp.fast_weight<32x32xf32>)
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d=64" | not fwp-opt --fwp-specialize-dims="dims=d_ff=32" 2>&1 | FileCheck %s --check-prefix=AMBIGUOUS
// AMBIGUOUS: error: 'fwp.scan' op has sizes that could stand for several of its dims {d = 64 : i64, d_ff = 64 : i64}; fwp-specialize-dims cannot tell which ones --dim changes: give the dims distinct values

// The same through fwp-compile (the whole pipeline, down to the manifest).
// RUN: fwp-compile %S/Inputs/dpfp-ff.mlir --dim d=8 --emit=manifest -o - | FileCheck %s --check-prefix=MANIFEST
// MANIFEST: "states": [
// MANIFEST-NEXT: {
// MANIFEST-NEXT: "name": "W",
// MANIFEST-NEXT: "shape": [
// MANIFEST-NEXT: 32,
// MANIFEST-NEXT: 8
