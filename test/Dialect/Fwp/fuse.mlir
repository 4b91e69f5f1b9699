// RUN: fwp-opt %s --fwp-fuse | FileCheck %s

// After W1 = W + k (x) v, reads of W become reads of W1 minus the update:
//   read(W, q) = read(W1, q) - v (k . q);  read_transposed(W, x) = read_transposed(W1, x) - k (v . x)
// CHECK-LABEL: fwp.scan @sum
// CHECK: %[[W1:.*]] = fwp.write_sum %W, %k, %v
// CHECK-NEXT: %[[R:.*]] = fwp.read %[[W1]], %q
// CHECK-NEXT: %[[KQ:.*]] = fwp.dot %k, %q
// CHECK-NEXT: %[[S:.*]] = fwp.scale %v, %[[KQ]]
// CHECK-NEXT: %[[Y:.*]] = fwp.sub %[[R]], %[[S]]
// CHECK-NEXT: %[[T:.*]] = fwp.read_transposed %[[W1]], %v
// CHECK-NEXT: %[[VV:.*]] = fwp.dot %v, %v
// CHECK-NEXT: %[[S2:.*]] = fwp.scale %k, %[[VV]]
// CHECK-NEXT: %[[Z:.*]] = fwp.sub %[[T]], %[[S2]]
// CHECK-NEXT: fwp.yield %[[W1]], %[[Y]], %[[Z]]
fwp.scan @sum seq(%k : vector<2xf32>, %v : vector<2xf32>, %q : vector<2xf32>)
    states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>, z : vector<2xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W, %q : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  %z = fwp.read_transposed %W, %v : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y, %z : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
}

// A delta write's update is beta (v - vbar).
// CHECK-LABEL: fwp.scan @delta
// CHECK: %[[W1:.*]], %[[VBAR:.*]] = fwp.write_delta %W, %k, %v, %b
// CHECK-NEXT: %[[D:.*]] = fwp.sub %v, %[[VBAR]]
// CHECK-NEXT: %[[U:.*]] = fwp.scale %[[D]], %b
// CHECK-NEXT: %[[R:.*]] = fwp.read %[[W1]], %k
// CHECK-NEXT: %[[KK:.*]] = fwp.dot %k, %k
// CHECK-NEXT: %[[S:.*]] = fwp.scale %[[U]], %[[KK]]
// CHECK-NEXT: fwp.sub %[[R]], %[[S]]
fwp.scan @delta seq(%k : vector<2xf32>, %v : vector<2xf32>, %b : f32)
    states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %W1, %vbar = fwp.write_delta %W, %k, %v, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}

// Reads before the write, and uses that are not reads, stay.
// CHECK-LABEL: fwp.scan @untouched
// CHECK: %[[Y:.*]] = fwp.read %W, %k
// CHECK: fwp.write_sum %W, %k, %k
// CHECK: fwp.yield %W, %{{.*}}, %[[Y]]
fwp.scan @untouched seq(%k : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>, %V : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %y = fwp.read %W, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  %W1 = fwp.write_sum %W, %k, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  fwp.yield %W, %W1, %y : !fwp.fast_weight<2x2xf32>, !fwp.fast_weight<2x2xf32>, vector<2xf32>
}
