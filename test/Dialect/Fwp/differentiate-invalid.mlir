// RUN: fwp-opt %s -split-input-file -verify-diagnostics --fwp-differentiate

// A matrix state that is not updated by a chain of invertible updates cannot
// be rebuilt by inversion (it is checkpointed by default; see
// differentiate-strategies.mlir).
// expected-error @+1 {{matrix state 'W': its new value is not a chain of invertible updates (such as fwp.write_sum, fwp.write_delta) of the state, so fwp-differentiate cannot rebuild it by inversion; use fwp.backward = {W = "checkpoint"} or "store"}}
fwp.scan @reset states(%W : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "invert"}} {
  %z = fwp.constant 0.0 : !fwp.fast_weight<2x2xf32>
  fwp.yield %z : !fwp.fast_weight<2x2xf32>
}

// -----

// expected-error @+1 {{matrix state 'W': its new value is not a chain}}
fwp.scan @doubled states(%W : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "invert"}} {
  %W2 = fwp.add %W, %W : !fwp.fast_weight<2x2xf32>
  fwp.yield %W2 : !fwp.fast_weight<2x2xf32>
}

// -----

// A decay is an update that is never inverted (undoing it divides by a).
// expected-error @+1 {{matrix state 'W': its new value is not a chain of invertible updates}}
fwp.scan @decay seq(%a : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "invert"}} {
  %W2 = fwp.scale_rows %W, %a : !fwp.fast_weight<2x2xf32>, vector<2xf32>
  fwp.yield %W2 : !fwp.fast_weight<2x2xf32>
}

// -----

// expected-error @+1 {{state 'h' is not a fast weight: its backward is store or checkpoint, not invert}}
fwp.scan @vector_invert seq(%x : vector<2xf32>) states(%h : vector<2xf32>) attributes {fwp.backward = {h = "invert"}} {
  %h2 = fwp.add %h, %x : vector<2xf32>
  fwp.yield %h2 : vector<2xf32>
}

// -----

// expected-error @+1 {{'fwp.backward' for state 'W' must be "invert", "store" or "checkpoint[:C]" (C > 0), not "checkpoint:0"}}
fwp.scan @bad_strategy states(%W : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "checkpoint:0"}} {
  fwp.yield %W : !fwp.fast_weight<2x2xf32>
}

// -----

// expected-error @+1 {{'fwp.backward' names 'V', which is not a state of the scan}}
fwp.scan @unknown_state states(%W : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {V = "store"}} {
  fwp.yield %W : !fwp.fast_weight<2x2xf32>
}

// -----

// expected-error @+1 {{checkpointed states must share one segment length, found 4 and 8}}
fwp.scan @two_lengths states(%W : !fwp.fast_weight<2x2xf32>, %R : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "checkpoint:4", R = "checkpoint:8"}} {
  fwp.yield %W, %R : !fwp.fast_weight<2x2xf32>, !fwp.fast_weight<2x2xf32>
}

// -----

// expected-error @+1 {{state 'R' asks for store while another state is checkpointed}}
fwp.scan @store_and_checkpoint states(%W : !fwp.fast_weight<2x2xf32>, %R : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "checkpoint:4", R = "store"}} {
  fwp.yield %W, %R : !fwp.fast_weight<2x2xf32>, !fwp.fast_weight<2x2xf32>
}

// -----

// Composite ops are decomposed before differentiation.
fwp.scan @composite seq(%x : vector<2xf32>) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{'fwp.l2_norm' op has no adjoint rule (AdjointOpInterface); it is a composite op: run fwp-decompose first}}
  %y = fwp.l2_norm %x : vector<2xf32>
  fwp.yield %y : vector<2xf32>
}

// -----

// Ops without an adjoint rule are errors, never silent zero gradients.
fwp.scan @no_rule seq(%x : vector<2xf32>, %g : vector<2xf32>) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{'fwp.softmax_grad' op has no adjoint rule (AdjointOpInterface)}}
  %y = fwp.softmax_grad %x, %g : vector<2xf32>
  fwp.yield %y : vector<2xf32>
}

// -----

// expected-error @+1 {{'fwp.scan' op is already differentiated (@twice_train exists)}}
fwp.scan @twice seq(%x : f32) outputs(y : f32) {
  fwp.yield %x : f32
}
fwp.scan @twice_train seq(%x : f32) outputs(y : f32) {
  fwp.yield %x : f32
}

// -----

// The runtime runs a checkpointed layer's segments forwards in time: a scan
// that runs backwards in time stores (or inverts) instead.
// expected-error @+1 {{state 'W': a scan that runs backwards in time (reverse) cannot be checkpointed; use fwp.backward = {W = "store"} (or "invert")}}
fwp.scan @reverse_checkpointed reverse seq(%a : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) attributes {fwp.backward = {W = "checkpoint:4"}} {
  %W2 = fwp.scale_rows %W, %a : !fwp.fast_weight<2x2xf32>, vector<2xf32>
  fwp.yield %W2 : !fwp.fast_weight<2x2xf32>
}
