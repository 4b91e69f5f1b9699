// RUN: fwp-opt %s -split-input-file -verify-diagnostics

fwp.scan @rows seq(%a : vector<3xf32>) states(%W : !fwp.fast_weight<4x3xf32>) {
  // expected-error @+1 {{'fwp.scale_rows' op factors have 3 entries but the weight has 4 key rows}}
  %W1 = fwp.scale_rows %W, %a : !fwp.fast_weight<4x3xf32>, vector<3xf32>
  fwp.yield %W1 : !fwp.fast_weight<4x3xf32>
}

// -----

fwp.scan @rows_type params(%W : !fwp.fast_weight<4x3xf32>) {
  %a = fwp.constant 1.0 : vector<4xf64>
  // expected-error @+1 {{'fwp.scale_rows' op factors have element type 'f64' but the weight has 'f32'}}
  %W1 = fwp.scale_rows %W, %a : !fwp.fast_weight<4x3xf32>, vector<4xf64>
  fwp.yield
}

// -----

fwp.scan @row_dot params(%W : !fwp.fast_weight<4x3xf32>) outputs(y : vector<3xf32>) {
  // expected-error @+1 {{'fwp.row_dot' op result has 3 entries but the weights have 4 key rows}}
  %y = fwp.row_dot %W, %W : !fwp.fast_weight<4x3xf32> -> vector<3xf32>
  fwp.yield %y : vector<3xf32>
}

// -----

fwp.scan @l2 seq(%x : vector<4xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{'fwp.l2_norm' op eps must be positive, got 0}}
  %y = fwp.l2_norm %x eps(0.0) : vector<4xf32>
  fwp.yield %y : vector<4xf32>
}

// -----

fwp.scan @scale_weight params(%W : !fwp.fast_weight<4x3xf32>) {
  %a = fwp.constant 1.0 : f64
  // expected-error @+1 {{'fwp.scale_weight' op failed to verify that factor is the element type of the weight}}
  %W1 = "fwp.scale_weight"(%W, %a) : (!fwp.fast_weight<4x3xf32>, f64) -> !fwp.fast_weight<4x3xf32>
  fwp.yield
}

// -----

fwp.scan @scale_const seq(%x : vector<4xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{'fwp.scale_const' op factor and size_power must be finite}}
  %y = fwp.scale_const %x factor(0x7FF0000000000000) : vector<4xf32>
  fwp.yield %y : vector<4xf32>
}
