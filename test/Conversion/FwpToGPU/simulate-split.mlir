// The GPU lowering accepts scans split by fwp-split-time-parallel: it
// computes the prologue and epilogue ops inside the step, as before, and the
// kernels of the split forward, training forward and backward scans agree on
// the simulated GPU with the scans' own semantics (docs/design.md,
// "Time-parallel prologue and epilogue").
//
// RUN: fwp-opt %models/delta_net.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --fwp-split-time-parallel --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=DN
// RUN: fwp-opt %models/gated_delta_net.mlir --fwp-decompose --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --fwp-split-time-parallel --test-fwp-gpu-kernels="seed=3" -o /dev/null | FileCheck %s --check-prefix=GDN
// RUN: fwp-opt %models/delta_lstm.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --fwp-split-time-parallel --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=LSTM
//
// DN: @delta_net_kernel ok
// DN: @delta_net_train_kernel ok
// DN: @delta_net_grad_kernel ok
// GDN: @gated_delta_net_kernel ok
// GDN: @gated_delta_net_train_kernel ok
// GDN: @gated_delta_net_grad_kernel ok
// LSTM: @delta_lstm_kernel ok
// LSTM: @delta_lstm_train_kernel ok
// LSTM: @delta_lstm_grad_kernel ok
