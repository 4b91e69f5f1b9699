// RUN: fwp-opt %s | fwp-opt | FileCheck %s
// RUN: fwp-opt %s --mlir-print-op-generic | fwp-opt | FileCheck %s

// The ops of decaying fast weights round-trip through the custom and
// generic forms.

// CHECK-LABEL: fwp.scan @decay_ops
fwp.scan @decay_ops dims(d = 4, n = 3)
    seq(%x : vector<4xf32>, %s : f32)
    params(%p : f32)
    states(%W : !fwp.fast_weight<4x3xf32>)
    outputs(y : vector<4xf32>) {
  // CHECK: fwp.sqrt %{{.*}} : f32
  %r = fwp.sqrt %s : f32
  // CHECK: fwp.sqrt %{{.*}} : vector<4xf32>
  %rv = fwp.sqrt %x : vector<4xf32>
  // CHECK: fwp.l2_norm %{{.*}} : vector<4xf32>
  %n = fwp.l2_norm %x : vector<4xf32>
  // CHECK: fwp.l2_norm %{{.*}} eps(1.000000e-05) : vector<4xf32>
  %n2 = fwp.l2_norm %x eps(1.0e-05) : vector<4xf32>
  // CHECK: fwp.scale_const %{{.*}} size_power(-5.000000e-01) : vector<4xf32>
  %q = fwp.scale_const %n size_power(-0.5) : vector<4xf32>
  // CHECK: fwp.scale_const %{{.*}} factor(2.000000e+00) : vector<4xf32>
  %q2 = fwp.scale_const %n2 factor(2.0) : vector<4xf32>
  // CHECK: fwp.scale_weight %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>
  %W1 = fwp.scale_weight %W, %p : !fwp.fast_weight<4x3xf32>
  // CHECK: fwp.scale_rows %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>, vector<4xf32>
  %W2 = fwp.scale_rows %W1, %q : !fwp.fast_weight<4x3xf32>, vector<4xf32>
  // CHECK: fwp.row_dot %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32> -> vector<4xf32>
  %y = fwp.row_dot %W2, %W : !fwp.fast_weight<4x3xf32> -> vector<4xf32>
  %y1 = fwp.add %y, %rv : vector<4xf32>
  %y2 = fwp.add %y1, %q2 : vector<4xf32>
  %y3 = fwp.scale %y2, %r : vector<4xf32>
  fwp.yield %W2, %y3 : !fwp.fast_weight<4x3xf32>, vector<4xf32>
}
