// RUN: fwp-opt %s --canonicalize | FileCheck %s

// CHECK-LABEL: fwp.scan @folds
fwp.scan @folds seq(%x : vector<2xf32>, %k : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(a : vector<2xf32>, b : vector<2xf32>, c : vector<2xf32>, d : vector<2xf32>) {
  %z = fwp.constant 0.0 : vector<2xf32>
  // x + 0 = 0 + x = x - 0 = -(-x) = x
  %a = fwp.add %x, %z : vector<2xf32>
  %b = fwp.add %z, %x : vector<2xf32>
  %c = fwp.sub %x, %z : vector<2xf32>
  %n = fwp.neg %x : vector<2xf32>
  %d = fwp.neg %n : vector<2xf32>
  // W + 0 (x) k = W + k (x) 0 = W
  %W1 = fwp.write_sum %W, %z, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %W2 = fwp.write_sum %W1, %k, %z : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  // CHECK-NOT: fwp.add
  // CHECK-NOT: fwp.sub
  // CHECK-NOT: fwp.neg
  // CHECK-NOT: fwp.write_sum
  // CHECK: fwp.yield %W, %x, %x, %x, %x
  fwp.yield %W2, %a, %b, %c, %d : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// Sums of non-zero values stay.
// CHECK-LABEL: fwp.scan @keeps
// CHECK: fwp.add %x, %x
fwp.scan @keeps seq(%x : vector<2xf32>) outputs(a : vector<2xf32>) {
  %a = fwp.add %x, %x : vector<2xf32>
  fwp.yield %a : vector<2xf32>
}

// Only a zero constant is the identity: a zero matrix folds away, a vector
// of ones does not.
// CHECK-LABEL: fwp.scan @zero_matrix
fwp.scan @zero_matrix seq(%x : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(a : vector<2xf32>) {
  // CHECK-NOT: fwp.add %W
  // CHECK-NOT: fwp.sub
  // CHECK: %[[ONE:.*]] = fwp.constant 1.000000e+00 : vector<2xf32>
  // CHECK-NEXT: %[[A:.*]] = fwp.add %x, %[[ONE]] : vector<2xf32>
  // CHECK-NEXT: fwp.yield %W, %[[A]]
  %Z = fwp.constant 0.0 : !fwp.fast_weight<2x2xf32>
  %W1 = fwp.add %W, %Z : !fwp.fast_weight<2x2xf32>
  %W2 = fwp.sub %W1, %Z : !fwp.fast_weight<2x2xf32>
  %one = fwp.constant 1.0 : vector<2xf32>
  %a = fwp.add %x, %one : vector<2xf32>
  fwp.yield %W2, %a : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}

// Two sum writes whose values are proportional are one:
// W + k1 (x) v + k2 (x) (-(c v)) = W + (k1 - c k2) (x) v.
// CHECK-LABEL: fwp.scan @proportional_writes
// CHECK: %[[CK:.*]] = fwp.scale %k2, %c
// CHECK-NEXT: %[[KEY:.*]] = fwp.sub %k1, %[[CK]]
// CHECK-NEXT: %[[W:.*]] = fwp.write_sum %W, %[[KEY]], %v
// CHECK-NOT: fwp.write_sum
// CHECK: fwp.yield %[[W]]
fwp.scan @proportional_writes seq(%k1 : vector<2xf32>, %k2 : vector<2xf32>, %v : vector<3xf32>, %c : f32) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %W1 = fwp.write_sum %W, %k1, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %cv = fwp.scale %v, %c : vector<3xf32>
  %ncv = fwp.neg %cv : vector<3xf32>
  %W2 = fwp.write_sum %W1, %k2, %ncv : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  fwp.yield %W2, %v : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}

// The first write's value used elsewhere too, or values not proportional:
// both writes stay.
// CHECK-LABEL: fwp.scan @unrelated_writes
// CHECK-COUNT-2: fwp.write_sum
fwp.scan @unrelated_writes seq(%k1 : vector<2xf32>, %k2 : vector<2xf32>, %v : vector<3xf32>, %u : vector<3xf32>) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %W1 = fwp.write_sum %W, %k1, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %W2 = fwp.write_sum %W1, %k2, %u : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  fwp.yield %W2, %v : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}

// The first write's result is read: it stays.
// CHECK-LABEL: fwp.scan @read_between_writes
// CHECK-COUNT-2: fwp.write_sum
fwp.scan @read_between_writes seq(%k1 : vector<2xf32>, %k2 : vector<2xf32>, %v : vector<3xf32>, %c : f32) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %W1 = fwp.write_sum %W, %k1, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %W1, %k1 : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  %cv = fwp.scale %v, %c : vector<3xf32>
  %W2 = fwp.write_sum %W1, %k2, %cv : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  fwp.yield %W2, %y : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}
