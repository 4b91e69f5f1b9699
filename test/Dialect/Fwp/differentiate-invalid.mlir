// RUN: fwp-opt %s -split-input-file -verify-diagnostics --fwp-differentiate

// A matrix state that is not updated by a chain of writes cannot be rebuilt.
// expected-error @+1 {{matrix state 'W': its new value is not a chain of fwp.write_sum / fwp.write_delta ops starting from the state}}
fwp.scan @reset states(%W : !fwp.fast_weight<2x2xf32>) {
  %z = fwp.zeros : !fwp.fast_weight<2x2xf32>
  fwp.yield %z : !fwp.fast_weight<2x2xf32>
}

// -----

// expected-error @+1 {{matrix state 'W': its new value is not a chain}}
fwp.scan @doubled states(%W : !fwp.fast_weight<2x2xf32>) {
  %W2 = fwp.add %W, %W : !fwp.fast_weight<2x2xf32>
  fwp.yield %W2 : !fwp.fast_weight<2x2xf32>
}

// -----

// Ops without an adjoint rule are errors, never silent zero gradients.
fwp.scan @no_rule seq(%x : vector<2xf32>, %g : vector<2xf32>) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{'fwp.softmax_grad' op has no adjoint rule in fwp-differentiate}}
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
