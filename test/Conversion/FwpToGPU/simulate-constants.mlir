// fwp.constant of every kind -- a scalar, a vector, a fast weight, zero and
// not -- on the simulated GPU of test-fwp-gpu-kernels agrees with the scan
// evaluated from the ops' definitions, on one warp and on two (where a
// 4 x 3 matrix has masked rows and columns).
//
// RUN: fwp-opt %s --test-fwp-gpu-kernels -o /dev/null | FileCheck %s
// RUN: fwp-opt %s --test-fwp-gpu-kernels="block-size=64 steps=7" -o /dev/null | FileCheck %s
//
// CHECK: @constants_kernel ok
fwp.scan @constants seq(%k : vector<4xf32>, %v : vector<3xf32>)
    states(%W : !fwp.fast_weight<4x3xf32>) outputs(y : vector<3xf32>) {
  %C = fwp.constant 0.5 : !fwp.fast_weight<4x3xf32>
  %W1 = fwp.add %W, %C : !fwp.fast_weight<4x3xf32>
  %Z = fwp.constant 0.0 : !fwp.fast_weight<4x3xf32>
  %Z1 = fwp.write_sum %Z, %k, %v : !fwp.fast_weight<4x3xf32>, vector<4xf32>, vector<3xf32>
  %W2 = fwp.sub %W1, %Z1 : !fwp.fast_weight<4x3xf32>
  %r = fwp.read %W2, %k : !fwp.fast_weight<4x3xf32>, vector<4xf32> -> vector<3xf32>
  %two = fwp.constant 2.0 : f32
  %r2 = fwp.scale %r, %two : vector<3xf32>
  %ones = fwp.constant 1.0 : vector<3xf32>
  %y = fwp.add %r2, %ones : vector<3xf32>
  fwp.yield %W2, %y : !fwp.fast_weight<4x3xf32>, vector<3xf32>
}
