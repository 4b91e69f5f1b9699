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
