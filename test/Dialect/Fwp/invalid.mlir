// RUN: fwp-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{seq name "9x" is not an identifier}}
"fwp.scan"() <{dims = {}, output_names = [], output_types = [], param_names = [], seq_names = ["9x"], state_names = [], sym_name = "bad_name"}> ({
^bb0(%a: f32):
  fwp.yield
}) : () -> ()

// -----

// expected-error @+1 {{name 'a' is used twice among seq, params and states}}
"fwp.scan"() <{dims = {}, output_names = [], output_types = [], param_names = [], seq_names = ["a"], state_names = ["a"], sym_name = "twice"}> ({
^bb0(%a: f32, %b: f32):
  fwp.yield %b : f32
}) : () -> ()

// -----

// expected-error @+1 {{output name "bad name" is not an identifier}}
fwp.scan @bad_output seq(%x : f32) outputs("bad name" : f32) {
  fwp.yield %x : f32
}

// -----

// expected-error @+1 {{output name 'y' is used twice}}
fwp.scan @two_outputs seq(%x : f32) outputs(y : f32, y : f32) {
  fwp.yield %x, %x : f32, f32
}

// -----

// expected-error @+1 {{has 1 output names but 0 output types}}
"fwp.scan"() <{dims = {}, output_names = ["y"], output_types = [], param_names = [], seq_names = ["x"], state_names = [], sym_name = "types"}> ({
^bb0(%x: f32):
  fwp.yield %x : f32
}) : () -> ()

// -----

// expected-error @+1 {{dim 'd' must be a positive integer, got 0}}
fwp.scan @zero_dim dims(d = 0) seq(%x : f32) outputs(y : f32) {
  fwp.yield %x : f32
}

// -----

// expected-error @+1 {{body has 2 arguments but seq, params and states name 1}}
"fwp.scan"() <{dims = {}, output_names = [], output_types = [], param_names = [], seq_names = ["x"], state_names = [], sym_name = "args"}> ({
^bb0(%x: f32, %y: f32):
  fwp.yield
}) : () -> ()

// -----

// expected-error @+1 {{seq input 'b' has element type 'f64' but the scan computes in 'f32'}}
fwp.scan @mixed seq(%a : f32, %b : f64) outputs(y : f32) {
  fwp.yield %a : f32
}

// -----

// expected-error @+1 {{seq input 'W' must be a float scalar or a 1-D vector, got '!fwp.fast_weight<2x2xf32>'}}
fwp.scan @matrix_seq seq(%W : !fwp.fast_weight<2x2xf32>) outputs(y : f32) {
  %z = fwp.constant 0.0 : f32
  fwp.yield %z : f32
}

// -----

// expected-error @+1 {{param 'P' must be a scalar, a 1-D vector or a !fwp.fast_weight, got 'vector<2x2xf32>'}}
fwp.scan @bad_param params(%P : vector<2x2xf32>) outputs(y : f32) {
  %z = fwp.constant 0.0 : f32
  fwp.yield %z : f32
}

// -----

// expected-error @+1 {{state 'S' must be a scalar, a 1-D vector or a !fwp.fast_weight, got 'i32'}}
fwp.scan @bad_state states(%S : i32) outputs(y : f32) {
  %z = fwp.constant 0.0 : f32
  fwp.yield %S, %z : i32, f32
}

// -----

// expected-error @+1 {{output 'y' must be a scalar, a 1-D vector or a !fwp.fast_weight, got 'i32'}}
fwp.scan @bad_output_type seq(%x : f32) outputs(y : i32) {
  fwp.yield %x : f32
}

// -----

// expected-error @+1 {{body must end in fwp.yield}}
fwp.scan @no_yield seq(%x : f32) {
  llvm.unreachable
}

// -----

fwp.scan @count seq(%x : f32) states(%s : f32) outputs(y : f32) {
  // expected-error @+1 {{yields 1 values but the scan has 1 states and 1 outputs (states first, then outputs)}}
  fwp.yield %x : f32
}

// -----

fwp.scan @yield_type seq(%x : vector<2xf32>) states(%s : f32) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{operand #0 for state 's' has type 'vector<2xf32>' but the state has type 'f32'}}
  fwp.yield %x, %x : vector<2xf32>, vector<2xf32>
}

// -----

fwp.scan @read_query seq(%q : vector<3xf32>) states(%W : !fwp.fast_weight<4x2xf32>) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{query has 3 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has key dimension 4}}
  %y = fwp.read %W, %q : !fwp.fast_weight<4x2xf32>, vector<3xf32> -> vector<2xf32>
  fwp.yield %W, %y : !fwp.fast_weight<4x2xf32>, vector<2xf32>
}

// -----

fwp.scan @read_result seq(%q : vector<4xf32>) states(%W : !fwp.fast_weight<4x2xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{result has 4 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has value dimension 2}}
  %y = fwp.read %W, %q : !fwp.fast_weight<4x2xf32>, vector<4xf32> -> vector<4xf32>
  fwp.yield %W, %y : !fwp.fast_weight<4x2xf32>, vector<4xf32>
}

// -----

fwp.scan @read_element seq(%q : vector<4xf64>) params(%W : !fwp.fast_weight<4x2xf64>) outputs(y : vector<2xf64>) {
  %W32 = fwp.constant 0.0 : !fwp.fast_weight<4x2xf32>
  // expected-error @+1 {{query has element type 'f64' but the fast weight '!fwp.fast_weight<4x2xf32>' holds 'f32'}}
  %y = fwp.read %W32, %q : !fwp.fast_weight<4x2xf32>, vector<4xf64> -> vector<2xf32>
  %z = fwp.read %W, %q : !fwp.fast_weight<4x2xf64>, vector<4xf64> -> vector<2xf64>
  fwp.yield %z : vector<2xf64>
}

// -----

fwp.scan @read_t_value seq(%x : vector<3xf32>) states(%W : !fwp.fast_weight<4x2xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{value has 3 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has value dimension 2}}
  %y = fwp.read_transposed %W, %x : !fwp.fast_weight<4x2xf32>, vector<3xf32> -> vector<4xf32>
  fwp.yield %W, %y : !fwp.fast_weight<4x2xf32>, vector<4xf32>
}

// -----

fwp.scan @read_t_result seq(%x : vector<2xf32>) states(%W : !fwp.fast_weight<4x2xf32>) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{result has 2 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has key dimension 4}}
  %y = fwp.read_transposed %W, %x : !fwp.fast_weight<4x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W, %y : !fwp.fast_weight<4x2xf32>, vector<2xf32>
}

// -----

fwp.scan @sum_key seq(%k : vector<3xf32>, %v : vector<2xf32>) states(%W : !fwp.fast_weight<4x2xf32>) {
  // expected-error @+1 {{key has 3 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has key dimension 4}}
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x2xf32>, vector<3xf32>, vector<2xf32>
  fwp.yield %W1 : !fwp.fast_weight<4x2xf32>
}

// -----

fwp.scan @sum_value seq(%k : vector<4xf32>, %v : vector<3xf32>) states(%W : !fwp.fast_weight<4x2xf32>) {
  // expected-error @+1 {{value has 3 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has value dimension 2}}
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<4x2xf32>, vector<4xf32>, vector<3xf32>
  fwp.yield %W1 : !fwp.fast_weight<4x2xf32>
}

// -----

fwp.scan @delta_key seq(%k : vector<2xf32>, %v : vector<2xf32>, %b : f32) states(%W : !fwp.fast_weight<4x2xf32>) {
  // expected-error @+1 {{key has 2 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has key dimension 4}}
  %W1, %r = fwp.write_delta %W, %k, %v, %b : !fwp.fast_weight<4x2xf32>, vector<2xf32>, vector<2xf32>
  fwp.yield %W1 : !fwp.fast_weight<4x2xf32>
}

// -----

fwp.scan @delta_value seq(%k : vector<4xf32>, %v : vector<4xf32>, %b : f32) states(%W : !fwp.fast_weight<4x2xf32>) {
  // expected-error @+1 {{value has 4 entries but the fast weight '!fwp.fast_weight<4x2xf32>' has value dimension 2}}
  %W1, %r = fwp.write_delta %W, %k, %v, %b : !fwp.fast_weight<4x2xf32>, vector<4xf32>, vector<4xf32>
  fwp.yield %W1 : !fwp.fast_weight<4x2xf32>
}

// -----

fwp.scan @sum_norm_eps seq(%x : vector<4xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{eps must be non-negative, got -1.0}}
  %y = fwp.sum_norm %x eps(-1.0) : vector<4xf32>
  fwp.yield %y : vector<4xf32>
}

// -----

fwp.scan @dpfp_nu seq(%x : vector<2xf32>) outputs(y : vector<16xf32>) {
  // expected-error @+1 {{nu = 4 exceeds 2n - 1 = 3 for an input of 2 entries}}
  %y = fwp.dpfp %x nu(4) : vector<2xf32> -> vector<16xf32>
  fwp.yield %y : vector<16xf32>
}

// -----

fwp.scan @dpfp_size seq(%x : vector<4xf32>) outputs(y : vector<10xf32>) {
  // expected-error @+1 {{result has 10 entries but DPFP-1 of 4 entries has 2 * 4 * 1 = 8}}
  %y = fwp.dpfp %x nu(1) : vector<4xf32> -> vector<10xf32>
  fwp.yield %y : vector<10xf32>
}

// -----

fwp.scan @dpfp_element outputs(y : vector<8xf64>) {
  %x = fwp.constant 0.0 : vector<4xf32>
  // expected-error @+1 {{result has element type 'f64' but the input has 'f32'}}
  %y = fwp.dpfp %x nu(1) : vector<4xf32> -> vector<8xf64>
  fwp.yield %y : vector<8xf64>
}

// -----

fwp.scan @dpfp_grad_size seq(%x : vector<4xf32>, %g : vector<6xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{grad has 6 entries but DPFP-1 of 4 entries has 2 * 4 * 1 = 8}}
  %y = fwp.dpfp_grad %x, %g nu(1) : vector<4xf32>, vector<6xf32>
  fwp.yield %y : vector<4xf32>
}

// -----

fwp.scan @ln_eps seq(%x : vector<4xf32>) params(%w : vector<4xf32>, %b : vector<4xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{eps must be positive, got 0.0}}
  %y = fwp.layer_norm %x, %w, %b eps(0.0) : vector<4xf32>
  fwp.yield %y : vector<4xf32>
}

// -----

fwp.scan @ln_grad_eps seq(%x : vector<4xf32>) params(%w : vector<4xf32>) outputs(y : vector<4xf32>) {
  // expected-error @+1 {{eps must be positive, got -2.0}}
  %dx, %dw, %db = fwp.layer_norm_grad %x, %w, %x eps(-2.0) : vector<4xf32>
  fwp.yield %dx : vector<4xf32>
}

// -----

// expected-error @+1 {{fast-weight dimensions must be positive, got 0x4}}
fwp.scan @zero_weight states(%W : !fwp.fast_weight<0x4xf32>) {
  fwp.yield %W : !fwp.fast_weight<0x4xf32>
}

// -----

// expected-error @+1 {{a fast weight has exactly two dimensions (key x value), got 3}}
fwp.scan @rank3 states(%W : !fwp.fast_weight<2x2x2xf32>) {
  fwp.yield %W : !fwp.fast_weight<2x2x2xf32>
}

// -----

// expected-error @+1 {{fast-weight element type must be a float, got 'i32'}}
fwp.scan @int_weight states(%W : !fwp.fast_weight<2x2xi32>) {
  fwp.yield %W : !fwp.fast_weight<2x2xi32>
}

// -----

// expected-error @+1 {{fast-weight element type must be f32 or f64, got 'f16'}}
fwp.scan @half_weight states(%W : !fwp.fast_weight<2x2xf16>) {
  fwp.yield %W : !fwp.fast_weight<2x2xf16>
}

// -----

func.func @outside(%x: f32) {
  // expected-error @+1 {{expects parent op 'fwp.scan'}}
  fwp.yield %x : f32
}

// -----

// The dims must agree with the types: a dim that no type uses would be
// recorded in the manifest while the code computes with other sizes.
// expected-error @+1 {{dim 'd' is 16 but no seq input, param, state or output has that size: the dims must agree with the types}}
fwp.scan @dims_disagree dims(d = 16) seq(%x : vector<8xf32>) states(%W : !fwp.fast_weight<8x8xf32>) outputs(y : vector<8xf32>) {
  fwp.yield %W, %x : !fwp.fast_weight<8x8xf32>, vector<8xf32>
}

// -----

// expected-error @+1 {{dim 'd' is 65536, more than the largest supported size 4096}}
fwp.scan @huge_dim dims(d = 65536) seq(%x : vector<65536xf32>) outputs(y : vector<65536xf32>) {
  fwp.yield %x : vector<65536xf32>
}

// -----

// expected-error @+1 {{has the type '!fwp.fast_weight<5000x4xf32>', larger than the largest supported size 4096}}
fwp.scan @huge_weight seq(%x : vector<4xf32>) states(%W : !fwp.fast_weight<5000x4xf32>) outputs(y : vector<4xf32>) {
  fwp.yield %W, %x : !fwp.fast_weight<5000x4xf32>, vector<4xf32>
}

// -----

// expected-error @+1 {{has the type 'vector<70000xf32>', larger than the largest supported size 65536}}
fwp.scan @huge_vector seq(%x : vector<70000xf32>) outputs(y : vector<70000xf32>) {
  fwp.yield %x : vector<70000xf32>
}
