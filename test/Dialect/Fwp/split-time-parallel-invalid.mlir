// RUN: fwp-opt %s -split-input-file -verify-diagnostics
// The scan's verifier checks every `fwp.phase` attribute (TimeParallel.h).

fwp.scan @bad_name seq(%x : f32) outputs(y : f32) {
  // expected-error @+1 {{has 'fwp.phase' "preamble"; expected "prologue" or "epilogue"}}
  %s = fwp.sigmoid %x {fwp.phase = "preamble"} : f32
  fwp.yield %s : f32
}

// -----

fwp.scan @matrix seq(%k : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  // expected-error @+1 {{is marked prologue but only side-effect free ops computing scalars or vectors run outside the time loop}}
  %W1 = fwp.write_sum %W, %k, %k {fwp.phase = "prologue"} : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}

// -----

fwp.scan @prologue_of_state seq(%x : f32) states(%h : f32) outputs(y : f32) {
  // expected-error @+1 {{is marked prologue but operand #1 is not a seq input, a param or a prologue value}}
  %s = fwp.add %x, %h {fwp.phase = "prologue"} : f32
  fwp.yield %s, %s : f32, f32
}

// -----

fwp.scan @prologue_of_core seq(%x : f32) states(%h : f32) outputs(y : f32) {
  %s = fwp.add %x, %h : f32
  // expected-error @+1 {{is marked prologue but operand #0 is not a seq input, a param or a prologue value}}
  %t = fwp.tanh %s {fwp.phase = "prologue"} : f32
  fwp.yield %s, %t : f32, f32
}

// -----

fwp.scan @epilogue_state_matrix seq(%k : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %W1 = fwp.write_sum %W, %k, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  // expected-error @+1 {{is marked epilogue but operand #0 is a fast weight of the recurrence}}
  %y = fwp.read %W1, %k {fwp.phase = "epilogue"} : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}

// -----

fwp.scan @epilogue_feeds_state seq(%x : f32) states(%h : f32) outputs(y : f32) {
  %s = fwp.add %x, %h : f32
  // expected-error @+1 {{is marked epilogue but is yielded as state 'h'}}
  %t = fwp.tanh %s {fwp.phase = "epilogue"} : f32
  fwp.yield %t, %s : f32, f32
}

// -----

fwp.scan @epilogue_feeds_core seq(%x : f32) states(%h : f32) outputs(y : f32) {
  %s = fwp.add %x, %h : f32
  // expected-error @+1 {{is marked epilogue but is used by 'fwp.add', which is not in the epilogue}}
  %t = fwp.tanh %s {fwp.phase = "epilogue"} : f32
  %u = fwp.add %t, %h : f32
  fwp.yield %u, %t : f32, f32
}
