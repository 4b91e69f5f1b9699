// RUN: fwp-opt %s --fwp-approximate-math | FileCheck %s

// f32 exp and tanh become polynomials in plain arith ops (no libm call per
// lane after convert-math-to-llvm); f64 ones stay.
// CHECK-LABEL: func.func @f32_vector
// CHECK-NOT: math.exp
// CHECK-NOT: math.tanh
// CHECK: arith.mulf
// CHECK: return
func.func @f32_vector(%x: vector<16xf32>) -> (vector<16xf32>, vector<16xf32>) {
  %e = math.exp %x : vector<16xf32>
  %t = math.tanh %x : vector<16xf32>
  return %e, %t : vector<16xf32>, vector<16xf32>
}

// CHECK-LABEL: func.func @f32_scalar
// CHECK-NOT: math.exp
// CHECK: return
func.func @f32_scalar(%x: f32) -> f32 {
  %e = math.exp %x : f32
  return %e : f32
}

// CHECK-LABEL: func.func @f64_untouched
// CHECK: math.exp %{{.*}} : vector<8xf64>
// CHECK: math.tanh %{{.*}} : f64
func.func @f64_untouched(%x: vector<8xf64>, %y: f64) -> (vector<8xf64>, f64) {
  %e = math.exp %x : vector<8xf64>
  %t = math.tanh %y : f64
  return %e, %t : vector<8xf64>, f64
}
