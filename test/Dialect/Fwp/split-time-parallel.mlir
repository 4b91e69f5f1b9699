// RUN: fwp-opt %s --split-input-file --fwp-split-time-parallel | FileCheck %s
// The pass is idempotent: a second run finds the same split.
// RUN: fwp-opt %s --split-input-file --fwp-split-time-parallel --fwp-split-time-parallel | FileCheck %s
// With epilogue=false only the prologue is marked.
// RUN: fwp-opt %s --split-input-file --fwp-split-time-parallel="epilogue=false" | FileCheck %s --check-prefix=NOEPI
// NOEPI: fwp.elu_plus_one %q {fwp.phase = "prologue"}
// NOEPI-NOT: "epilogue"

// The feature maps and the gate depend on the seq inputs alone: prologue.
// The write and the read depend on the state: core. The scaled output and
// its tanh use a core value and reach only an output: epilogue. The
// constant (no operands) is prologue; `%u` also feeds the state, so it
// stays in the core although only its operand %y is core.
// CHECK-LABEL: fwp.scan @mixed
// CHECK: %[[C:.*]] = fwp.constant {{.*}} {fwp.phase = "prologue"}
// CHECK-NEXT: fwp.elu_plus_one %q {fwp.phase = "prologue"}
// CHECK-NEXT: fwp.sum_norm {{.*}} {fwp.phase = "prologue"}
// CHECK-NEXT: fwp.elu_plus_one %k {fwp.phase = "prologue"}
// CHECK-NEXT: fwp.sum_norm {{.*}} {fwp.phase = "prologue"}
// CHECK-NEXT: fwp.sigmoid %beta {fwp.phase = "prologue"}
// CHECK-NEXT: fwp.scale %v, %s {fwp.phase = "prologue"}
// Core ops print no attribute between their operands and types.
// CHECK-NEXT: %[[W1:.*]], %{{.*}} = fwp.write_delta %W, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}} : !fwp.fast_weight
// CHECK-NEXT: %[[Y:.*]] = fwp.read %[[W1]], %{{[0-9]+}} : !fwp.fast_weight
// CHECK-NEXT: fwp.add %h, %[[Y]] :
// CHECK-NEXT: fwp.scale %[[Y]], %[[C]] {fwp.phase = "epilogue"}
// CHECK-NEXT: fwp.tanh {{.*}} {fwp.phase = "epilogue"}
// CHECK-NEXT: fwp.yield
fwp.scan @mixed dims(d = 4)
    seq(%q : vector<4xf32>, %k : vector<4xf32>, %v : vector<4xf32>, %beta : f32)
    params(%s : f32)
    states(%W : !fwp.fast_weight<4x4xf32>, %h : vector<4xf32>)
    outputs(y : vector<4xf32>, z : vector<4xf32>) {
  %c = fwp.constant 2.0 : f32
  %q1 = fwp.elu_plus_one %q : vector<4xf32>
  %phi_q = fwp.sum_norm %q1 : vector<4xf32>
  %k1 = fwp.elu_plus_one %k : vector<4xf32>
  %phi_k = fwp.sum_norm %k1 : vector<4xf32>
  %b = fwp.sigmoid %beta : f32
  %v_s = fwp.scale %v, %s : vector<4xf32>
  %W1, %vbar = fwp.write_delta %W, %phi_k, %v_s, %b : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>
  %y = fwp.read %W1, %phi_q : !fwp.fast_weight<4x4xf32>, vector<4xf32> -> vector<4xf32>
  %u = fwp.add %h, %y : vector<4xf32>
  %y2 = fwp.scale %y, %c : vector<4xf32>
  %z = fwp.tanh %y2 : vector<4xf32>
  fwp.yield %W1, %u, %y, %z : !fwp.fast_weight<4x4xf32>, vector<4xf32>, vector<4xf32>, vector<4xf32>
}

// -----

// Ops computing a fast weight never leave the time loop, even from params
// alone (a matrix per step would cost T K V of memory); a read of a param
// matrix by a seq input is prologue. An epilogue op may not read a state
// matrix: the read of %W1 stays in the core although it reaches only an
// output.
// CHECK-LABEL: fwp.scan @matrices
// CHECK: fwp.add %R, %R :
// CHECK-NEXT: fwp.read %R, %x {fwp.phase = "prologue"}
// CHECK-NEXT: %[[W1:.*]] = fwp.write_sum %W, %x, %{{[0-9]+}} : !fwp.fast_weight
// CHECK-NEXT: fwp.read %[[W1]], %x : !fwp.fast_weight
// CHECK-NEXT: fwp.read %{{[0-9]+}}, %x : !fwp.fast_weight
fwp.scan @matrices dims(d = 2)
    seq(%x : vector<2xf32>)
    params(%R : !fwp.fast_weight<2x2xf32>)
    states(%W : !fwp.fast_weight<2x2xf32>)
    outputs(y : vector<2xf32>, z : vector<2xf32>) {
  %R2 = fwp.add %R, %R : !fwp.fast_weight<2x2xf32>
  %r = fwp.read %R, %x : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  %W1 = fwp.write_sum %W, %x, %r : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %x : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  %z = fwp.read %R2, %x : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y, %z : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
}
