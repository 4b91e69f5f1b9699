// RUN: fwp-opt %s --split-input-file --verify-diagnostics --convert-fwp-to-gpu=block-size=48
// RUN: fwp-opt %s --split-input-file --verify-diagnostics --convert-fwp-to-gpu=block-size=2048

// expected-error @+1 {{GPU block size must be a power of two in [32, 1024]}}
fwp.scan @bad_block seq(%x : vector<4xf32>) outputs(y : vector<4xf32>) {
  %y = fwp.softmax %x : vector<4xf32>
  fwp.yield %y : vector<4xf32>
}
