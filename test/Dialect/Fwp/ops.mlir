// RUN: fwp-opt %s | fwp-opt | FileCheck %s
// RUN: fwp-opt %s --mlir-print-op-generic | fwp-opt | FileCheck %s

// Every op of the dialect round-trips through the custom and generic forms.

// CHECK-LABEL: fwp.scan @all_ops dims(d = 4, n = 3)
// CHECK-NEXT: seq(%x: vector<4xf32>, %s: f32, %n3: vector<3xf32>)
// CHECK-NEXT: params(%w: vector<4xf32>, %b: vector<4xf32>, %R: !fwp.fast_weight<4x4xf32>)
// CHECK-NEXT: states(%W: !fwp.fast_weight<4x3xf32>, %h: vector<4xf32>)
// CHECK-NEXT: outputs(y : vector<4xf32>, z : f32)
fwp.scan @all_ops dims(d = 4, n = 3)
    seq(%x : vector<4xf32>, %s : f32, %n3 : vector<3xf32>)
    params(%w : vector<4xf32>, %b : vector<4xf32>, %R : !fwp.fast_weight<4x4xf32>)
    states(%W : !fwp.fast_weight<4x3xf32>, %h : vector<4xf32>)
    outputs(y : vector<4xf32>, z : f32) {
  // CHECK: fwp.elu_plus_one %{{.*}} : vector<4xf32>
  %e = fwp.elu_plus_one %x : vector<4xf32>
  // CHECK: fwp.sum_norm %{{.*}} : vector<4xf32>
  %n = fwp.sum_norm %e : vector<4xf32>
  // CHECK: fwp.sum_norm %{{.*}} eps(1.000000e-05) : vector<4xf32>
  %ne = fwp.sum_norm %e eps(1.0e-5) : vector<4xf32>
  // CHECK: fwp.softmax %{{.*}} : vector<4xf32>
  %sm = fwp.softmax %x : vector<4xf32>
  // CHECK: fwp.dpfp %{{.*}} nu(2) : vector<4xf32> -> vector<16xf32>
  %dp = fwp.dpfp %x nu(2) : vector<4xf32> -> vector<16xf32>
  // CHECK: fwp.sigmoid %{{.*}} : f32
  %sg = fwp.sigmoid %s : f32
  // CHECK: fwp.tanh %{{.*}} : vector<4xf32>
  %th = fwp.tanh %h : vector<4xf32>
  // CHECK: fwp.neg %{{.*}} : vector<4xf32>
  %ng = fwp.neg %x : vector<4xf32>
  // CHECK: fwp.add %{{.*}}, %{{.*}} : vector<4xf32>
  %ad = fwp.add %x, %n : vector<4xf32>
  // CHECK: fwp.sub %{{.*}}, %{{.*}} : vector<4xf32>
  %sb = fwp.sub %x, %n : vector<4xf32>
  // CHECK: fwp.mul %{{.*}}, %{{.*}} : vector<4xf32>
  %ml = fwp.mul %x, %n : vector<4xf32>
  // CHECK: fwp.div %{{.*}}, %{{.*}} : f32
  %dv = fwp.div %s, %sg : f32
  // CHECK: fwp.scale %{{.*}}, %{{.*}} : vector<4xf32>
  %sc = fwp.scale %x, %s : vector<4xf32>
  // CHECK: fwp.dot %{{.*}}, %{{.*}} : vector<4xf32>
  %dt = fwp.dot %x, %n : vector<4xf32>
  // CHECK: fwp.layer_norm %{{.*}}, %{{.*}}, %{{.*}} : vector<4xf32>
  %ln = fwp.layer_norm %x, %w, %b : vector<4xf32>
  // CHECK: fwp.constant 1.000000e+00 : vector<4xf32>
  %one = fwp.constant 1.0 : vector<4xf32>
  // A constant of a fast weight: every entry equal (zeros included).
  // CHECK: fwp.constant 0.000000e+00 : !fwp.fast_weight<4x3xf32>
  %z0 = fwp.constant 0.0 : !fwp.fast_weight<4x3xf32>
  // CHECK: fwp.constant 2.500000e-01 : !fwp.fast_weight<4x3xf32>
  %q0 = fwp.constant 0.25 : !fwp.fast_weight<4x3xf32>
  // CHECK: fwp.read %{{.*}}, %{{.*}} : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %r = fwp.read %R, %th : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  // CHECK: fwp.read_transposed %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>, vector<3xf32> -> vector<4xf32>
  %rt = fwp.read_transposed %W, %n3 : !fwp.fast_weight<4x3xf32>, vector<3xf32> -> vector<4xf32>
  // CHECK: fwp.write_sum %{{.*}}, %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<3xf32>
  %W1 = fwp.write_sum %W, %n, %n3 : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<3xf32>
  // CHECK: fwp.write_delta %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<3xf32>
  %W2, %vbar = fwp.write_delta %W1, %n, %n3, %sg : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<3xf32>
  // CHECK: fwp.add %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>
  %W3 = fwp.add %W2, %z0 : !fwp.fast_weight<4x3xf32>
  // CHECK: fwp.elu_plus_one_grad %{{.*}}, %{{.*}} : vector<4xf32>
  %g1 = fwp.elu_plus_one_grad %x, %n : vector<4xf32>
  // CHECK: fwp.sum_norm_grad %{{.*}}, %{{.*}} eps(1.000000e-05) : vector<4xf32>
  %g2 = fwp.sum_norm_grad %e, %g1 eps(1.0e-5) : vector<4xf32>
  // CHECK: fwp.softmax_grad %{{.*}}, %{{.*}} : vector<4xf32>
  %g3 = fwp.softmax_grad %sm, %g2 : vector<4xf32>
  // CHECK: fwp.dpfp_grad %{{.*}}, %{{.*}} nu(2) : vector<4xf32>, vector<16xf32>
  %g4 = fwp.dpfp_grad %x, %dp nu(2) : vector<4xf32>, vector<16xf32>
  // CHECK: fwp.sigmoid_grad %{{.*}}, %{{.*}} : f32
  %g5 = fwp.sigmoid_grad %sg, %dv : f32
  // CHECK: fwp.tanh_grad %{{.*}}, %{{.*}} : vector<4xf32>
  %g6 = fwp.tanh_grad %th, %g4 : vector<4xf32>
  // CHECK: fwp.layer_norm_grad %{{.*}}, %{{.*}}, %{{.*}} : vector<4xf32>
  %dx, %dw, %db = fwp.layer_norm_grad %x, %w, %g6 : vector<4xf32>
  %y0 = fwp.add %ln, %r : vector<4xf32>
  %y1 = fwp.add %y0, %rt : vector<4xf32>
  %y = fwp.add %y1, %dx : vector<4xf32>
  %z1 = fwp.add %dt, %g5 : f32
  // CHECK: fwp.yield %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<4xf32>, f32
  fwp.yield %W3, %one, %y, %z1 : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<4xf32>, f32
}

// CHECK-LABEL: fwp.scan @backwards reverse dims(d = 2)
// CHECK: attributes {note = "kept"}
fwp.scan @backwards reverse dims(d = 2)
    seq(%x : vector<2xf64>)
    outputs(y : vector<2xf64>) attributes {note = "kept"} {
  fwp.yield %x : vector<2xf64>
}
