// RUN: fwp-opt %s --split-input-file --verify-diagnostics --convert-fwp-to-gpu

// Vectors live in shared memory; 60000 floats are more than any GPU has.
// expected-error @+1 {{needs 240000 bytes of shared memory for its vectors; no GPU has more than 232448}}
fwp.scan @huge seq(%x : vector<60000xf32>) outputs(y : vector<60000xf32>) {
  %y = fwp.softmax %x : vector<60000xf32>
  fwp.yield %y : vector<60000xf32>
}

