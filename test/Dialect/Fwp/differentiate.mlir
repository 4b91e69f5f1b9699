// RUN: fwp-opt %s --fwp-differentiate --canonicalize --cse | FileCheck %s

// The adjoint of every op: each scan below checks the rules (derived by hand in
// the comments) in the backward scan that fwp-differentiate builds.

fwp.scan @elu seq(%x : vector<2xf32>) outputs(y : vector<2xf32>) {
  %y = fwp.elu_plus_one %x : vector<2xf32>
  fwp.yield %y : vector<2xf32>
}
fwp.scan @softmax_tanh seq(%x : vector<2xf32>) outputs(y : vector<2xf32>) {
  %s = fwp.softmax %x : vector<2xf32>
  %y = fwp.tanh %s : vector<2xf32>
  fwp.yield %y : vector<2xf32>
}
fwp.scan @arith seq(%a : vector<2xf32>, %b : vector<2xf32>, %s : f32) outputs(y : vector<2xf32>, z : f32) {
  %m = fwp.mul %a, %b : vector<2xf32>
  %d = fwp.sub %m, %b : vector<2xf32>
  %y = fwp.scale %d, %s : vector<2xf32>
  %t = fwp.dot %a, %b : vector<2xf32>
  %q = fwp.div %t, %s : f32
  %z = fwp.sigmoid %q : f32
  fwp.yield %y, %z : vector<2xf32>, f32
}
fwp.scan @sum_rule seq(%k : vector<2xf32>, %v : vector<3xf32>, %q : vector<2xf32>) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %W1, %q : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}
fwp.scan @param_read seq(%x : vector<2xf32>) params(%R : !fwp.fast_weight<2x2xf32>, %w : vector<2xf32>, %b : vector<2xf32>) states(%h : vector<2xf32>) outputs(y : vector<2xf32>) {
  %r = fwp.read %R, %h : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  %a = fwp.add %x, %r : vector<2xf32>
  %y = fwp.layer_norm %a, %w, %b : vector<2xf32>
  fwp.yield %y, %y : vector<2xf32>, vector<2xf32>
}
fwp.scan @dpfp seq(%x : vector<2xf32>) outputs(y : vector<4xf32>) {
  %y = fwp.dpfp %x nu(1) : vector<2xf32> -> vector<4xf32>
  fwp.yield %y : vector<4xf32>
}

// Delta rule: W' = W + k (x) u, u = b (v - vbar), vbar = W^T k. With G the
// gradient reaching W': du = G^T k, db = du . (v - vbar), dv = b du,
// dvbar = -b du, dk = G u + W dvbar, dW = G + k (x) dvbar; W is rebuilt
// from the tape first: W = W' - key (x) delta.
fwp.scan @delta seq(%k : vector<2xf32>, %v : vector<2xf32>, %b : f32, %q : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %W1, %vbar = fwp.write_delta %W, %k, %v, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %q : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}

// CHECK-LABEL: fwp.scan @elu_grad reverse
// CHECK-NEXT: seq(%x: vector<2xf32>, %grad.y: vector<2xf32>)
// CHECK-NEXT: outputs(grad.x : vector<2xf32>) attributes {fwp.backward = {}, fwp.forward = @elu, fwp.role = "backward"}
// CHECK-NEXT: %[[Y:.*]] = fwp.elu_plus_one %x
// CHECK-NEXT: %[[G:.*]] = fwp.elu_plus_one_grad %[[Y]], %grad.y
// CHECK-NEXT: fwp.yield %[[G]]

// softmax_grad and tanh_grad take the recomputed outputs.
// CHECK-LABEL: fwp.scan @softmax_tanh_grad reverse
// CHECK: %[[S:.*]] = fwp.softmax %x
// CHECK-NEXT: %[[T:.*]] = fwp.tanh %[[S]]
// CHECK-NEXT: %[[DT:.*]] = fwp.tanh_grad %[[T]], %grad.y
// CHECK-NEXT: %[[DS:.*]] = fwp.softmax_grad %[[S]], %[[DT]]
// CHECK-NEXT: fwp.yield %[[DS]]

// y = s (a*b - b), z = sigmoid(dot(a, b) / s):
//   ga = b (gz' / s) + (s gy) * b,  gb = a (gz' / s) - s gy + (s gy) * a,
//   gs = -gz' (q / s) + gy . (a*b - b),   with gz' = sigmoid_grad(z, gz).
// CHECK-LABEL: fwp.scan @arith_grad reverse
// CHECK: %[[M:.*]] = fwp.mul %a, %b
// CHECK-NEXT: %[[D:.*]] = fwp.sub %[[M]], %b
// CHECK-NEXT: %[[T:.*]] = fwp.dot %a, %b
// CHECK-NEXT: %[[Q:.*]] = fwp.div %[[T]], %s
// CHECK-NEXT: %[[Z:.*]] = fwp.sigmoid %[[Q]]
// CHECK-NEXT: %[[DQ:.*]] = fwp.sigmoid_grad %[[Z]], %grad.z
// CHECK-NEXT: %[[DT:.*]] = fwp.div %[[DQ]], %s
// CHECK-NEXT: %[[QS:.*]] = fwp.div %[[Q]], %s
// CHECK-NEXT: %[[P:.*]] = fwp.mul %[[DQ]], %[[QS]]
// CHECK-NEXT: %[[DS1:.*]] = fwp.neg %[[P]]
// CHECK-NEXT: %[[DA1:.*]] = fwp.scale %b, %[[DT]]
// CHECK-NEXT: %[[DB1:.*]] = fwp.scale %a, %[[DT]]
// CHECK-NEXT: %[[DD:.*]] = fwp.scale %grad.y, %s
// CHECK-NEXT: %[[DS2:.*]] = fwp.dot %grad.y, %[[D]]
// CHECK-NEXT: %[[DS:.*]] = fwp.add %[[DS1]], %[[DS2]]
// CHECK-NEXT: %[[NB:.*]] = fwp.neg %[[DD]]
// CHECK-NEXT: %[[DB2:.*]] = fwp.add %[[DB1]], %[[NB]]
// CHECK-NEXT: %[[DA2:.*]] = fwp.mul %[[DD]], %b
// CHECK-NEXT: %[[DA:.*]] = fwp.add %[[DA1]], %[[DA2]]
// CHECK-NEXT: %[[DB3:.*]] = fwp.mul %[[DD]], %a
// CHECK-NEXT: %[[DB:.*]] = fwp.add %[[DB2]], %[[DB3]]
// CHECK-NEXT: fwp.yield %[[DA]], %[[DB]], %[[DS]]

// Sum rule: W is rebuilt as W' - key (x) delta; dq = W' gy; G = gW + q (x) gy;
// dk = G v; dv = G^T k. The key and the delta are seq inputs here, so the
// backward takes them from its inputs and the training forward records no
// tape at all.
// CHECK-LABEL: fwp.scan @sum_rule_train
// CHECK: outputs(y : vector<3xf32>) attributes
// CHECK: fwp.yield %{{.*}}, %{{.*}} :
// CHECK-LABEL: fwp.scan @sum_rule_grad reverse
// CHECK-NEXT: seq(%k: vector<2xf32>, %v: vector<3xf32>, %q: vector<2xf32>, %grad.y: vector<3xf32>)
// CHECK-NEXT: states(%W: !fwp.fast_weight<2x3xf32>, %grad.state.W: !fwp.fast_weight<2x3xf32>)
// CHECK-NEXT: outputs(grad.k : vector<2xf32>, grad.v : vector<3xf32>, grad.q : vector<2xf32>)
// CHECK-NEXT: %[[N:.*]] = fwp.neg %v
// CHECK-NEXT: %[[PREV:.*]] = fwp.write_sum %W, %k, %[[N]]
// CHECK-NEXT: %[[DQ:.*]] = fwp.read_transposed %W, %grad.y
// CHECK-NEXT: %[[G:.*]] = fwp.write_sum %grad.state.W, %q, %grad.y
// CHECK-NEXT: %[[DK:.*]] = fwp.read_transposed %[[G]], %v
// CHECK-NEXT: %[[DV:.*]] = fwp.read %[[G]], %k
// CHECK-NEXT: fwp.yield %[[PREV]], %[[G]], %[[DK]], %[[DV]], %[[DQ]]

// A vector state comes off the tape; a param's gradient is a carried
// accumulator: dR += h (x) g, dh = R g.
// CHECK-LABEL: fwp.scan @param_read_grad reverse
// CHECK-NEXT: seq(%x: vector<2xf32>, %grad.y: vector<2xf32>, %tape.h.prev: vector<2xf32>)
// CHECK-NEXT: params(%R: !fwp.fast_weight<2x2xf32>, %w: vector<2xf32>, %b: vector<2xf32>)
// CHECK-NEXT: states(%grad.state.h: vector<2xf32>, %grad.param.R: !fwp.fast_weight<2x2xf32>, %grad.param.w: vector<2xf32>, %grad.param.b: vector<2xf32>)
// CHECK: %[[R:.*]] = fwp.read %R, %tape.h.prev
// CHECK-NEXT: %[[A:.*]] = fwp.add %x, %[[R]]
// CHECK-NEXT: %[[GY:.*]] = fwp.add %grad.state.h, %grad.y
// CHECK-NEXT: %[[DX:.*]], %[[DW:.*]], %[[DB:.*]] = fwp.layer_norm_grad %[[A]], %w, %[[GY]]
// CHECK-NEXT: %[[AW:.*]] = fwp.add %grad.param.w, %[[DW]]
// CHECK-NEXT: %[[AB:.*]] = fwp.add %grad.param.b, %[[DB]]
// CHECK-NEXT: %[[DH:.*]] = fwp.read_transposed %R, %[[DX]]
// CHECK-NEXT: %[[AR:.*]] = fwp.write_sum %grad.param.R, %tape.h.prev, %[[DX]]
// CHECK-NEXT: fwp.yield %[[DH]], %[[AR]], %[[AW]], %[[AB]], %[[DX]]

// CHECK-LABEL: fwp.scan @dpfp_grad reverse
// CHECK: fwp.dpfp_grad %x, %grad.y nu(1) : vector<2xf32>, vector<4xf32>

// CHECK-LABEL: fwp.scan @delta_train
// The tape holds the residual v - vbar: the backward rebuilds the written row
// b (v - vbar) from it as the forward did, and vbar without a read.
// CHECK: %[[W1:.*]], %[[VBAR:.*]] = fwp.write_delta %W, %k, %v, %b
// CHECK: %[[DIFF:.*]] = fwp.sub %v, %[[VBAR]]
// CHECK-NEXT: fwp.yield %[[W1]], %{{.*}}, %[[DIFF]] :
// CHECK-LABEL: fwp.scan @delta_grad reverse
// CHECK: %[[U:.*]] = fwp.scale %tape.W.0.delta, %b
// CHECK-NEXT: %[[N:.*]] = fwp.neg %[[U]]
// CHECK-NEXT: %[[PREV:.*]] = fwp.write_sum %W, %k, %[[N]]
// No read of the rebuilt weight for vbar: v - vbar is the tape's residual.
// CHECK-NOT: fwp.read %
// CHECK: %[[DQ:.*]] = fwp.read_transposed %W, %grad.y
// CHECK-NEXT: %[[G:.*]] = fwp.write_sum %grad.state.W, %q, %grad.y
// The adjoint's own update G - b k (x) (G^T k) is a delta-rule write of G
// with value 0, whose retrieval is du = G^T k.
// CHECK-NEXT: %[[ZERO:.*]] = fwp.constant 0.0{{.*}} : vector<2xf32>
// CHECK-NEXT: %[[DW:.*]], %[[DU:.*]] = fwp.write_delta %[[G]], %k, %[[ZERO]], %b
// CHECK-NEXT: %[[DB:.*]] = fwp.dot %[[DU]], %tape.W.0.delta
// CHECK-NEXT: %[[DV:.*]] = fwp.scale %[[DU]], %b
// CHECK-NEXT: %[[DK1:.*]] = fwp.read_transposed %[[G]], %[[U]]
// CHECK-NEXT: %[[DVBAR:.*]] = fwp.neg %[[DV]]
// CHECK-NEXT: %[[DK2:.*]] = fwp.read_transposed %[[PREV]], %[[DVBAR]]
// CHECK-NEXT: %[[DK:.*]] = fwp.add %[[DK1]], %[[DK2]]
// CHECK-NEXT: fwp.yield %[[PREV]], %[[DW]], %[[DK]], %[[DV]], %[[DB]], %[[DQ]]
