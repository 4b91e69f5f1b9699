// RUN: fwp-opt %s --fwp-decompose | FileCheck %s
// RUN: fwp-opt %s --fwp-specialize-dims="dims=d=9" --fwp-decompose | FileCheck %s --check-prefix=D9

// Composite ops become the core that differentiation and the backends know.

// CHECK-LABEL: fwp.scan @composites
fwp.scan @composites dims(d = 4)
    seq(%x : vector<4xf32>, %a : f32)
    states(%W : !fwp.fast_weight<4x4xf32>)
    outputs(y : vector<4xf32>) {
  // l2_norm: x / sqrt(x . x + eps)
  // CHECK: %[[SQ:.*]] = fwp.dot %x, %x : vector<4xf32>
  // CHECK-NEXT: %[[EPS:.*]] = fwp.constant 9.9999999999999995E-7 : f32
  // CHECK-NEXT: %[[S:.*]] = fwp.add %[[SQ]], %[[EPS]] : f32
  // CHECK-NEXT: %[[R:.*]] = fwp.sqrt %[[S]] : f32
  // CHECK-NEXT: %[[ONE:.*]] = fwp.constant 1.000000e+00 : f32
  // CHECK-NEXT: %[[INV:.*]] = fwp.div %[[ONE]], %[[R]] : f32
  // CHECK-NEXT: %[[N:.*]] = fwp.scale %x, %[[INV]] : vector<4xf32>
  %n = fwp.l2_norm %x : vector<4xf32>
  // scale_const by 1/sqrt(4), folded from the type: 0.5 (1/3 at d = 9)
  // CHECK-NEXT: %[[HALF:.*]] = fwp.constant 5.000000e-01 : f32
  // CHECK-NEXT: %[[Q:.*]] = fwp.scale %[[N]], %[[HALF]] : vector<4xf32>
  // D9: fwp.constant 0.33333333333333331 : f32
  %q = fwp.scale_const %n size_power(-0.5) : vector<4xf32>
  // scale_weight: diag(a 1) W
  // CHECK-NEXT: %[[ONES:.*]] = fwp.constant 1.000000e+00 : vector<4xf32>
  // CHECK-NEXT: %[[AS:.*]] = fwp.scale %[[ONES]], %a : vector<4xf32>
  // CHECK-NEXT: %[[W1:.*]] = fwp.scale_rows %W, %[[AS]] : !fwp.fast_weight<4x4xf32>, vector<4xf32>
  %W1 = fwp.scale_weight %W, %a : !fwp.fast_weight<4x4xf32>
  %y = fwp.read %W1, %q : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<4x4xf32>, vector<4xf32>
}
// CHECK-NOT: fwp.l2_norm
// CHECK-NOT: fwp.scale_const
// CHECK-NOT: fwp.scale_weight
