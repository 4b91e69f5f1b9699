// The kernels of all six models -- inference forward, training forward with
// its tape, and the reverse backward scan from fwp-differentiate -- run on
// the simulated GPU of test-fwp-gpu-kernels and agree with the scans' own
// semantics. The simulator fails on a missing barrier, a shuffle in divergent
// code or an out-of-bounds access. Block sizes and dims vary so that every
// layout is exercised: one warp and several, S = 1..32 threads per column,
// several columns per thread, and sizes that are not powers of two (masked
// rows and columns).
//
// RUN: fwp-opt %models/linear_transformer.mlir --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=LT
// RUN: fwp-opt %models/delta_net.mlir --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=DN
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=MLP
// RUN: fwp-opt %models/delta_rnn.mlir --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=RNN
// RUN: fwp-opt %models/delta_lstm.mlir --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=LSTM
// RUN: fwp-opt %models/rdn.mlir --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=RDN
//
// LT: @linear_transformer_kernel ok
// LT: @linear_transformer_train_kernel ok
// LT: @linear_transformer_grad_kernel ok
// DN: @delta_net_kernel ok
// DN: @delta_net_train_kernel ok
// DN: @delta_net_grad_kernel ok
// MLP: @delta_mlp_kernel ok
// MLP: @delta_mlp_train_kernel ok
// MLP: @delta_mlp_grad_kernel ok
// RNN: @delta_rnn_kernel ok
// RNN: @delta_rnn_train_kernel ok
// RNN: @delta_rnn_grad_kernel ok
// LSTM: @delta_lstm_kernel ok
// LSTM: @delta_lstm_train_kernel ok
// LSTM: @delta_lstm_grad_kernel ok
// RDN: @rdn_kernel ok
// RDN: @rdn_train_kernel ok
// RDN: @rdn_grad_kernel ok
//
// After fwp-compile's whole front end (fwp-fuse rewrites reads of old
// fast weights through the writes).
// RUN: fwp-opt %models/linear_transformer.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=LT
// RUN: fwp-opt %models/delta_net.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=DN
// RUN: fwp-opt %models/delta_mlp.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=MLP
// RUN: fwp-opt %models/delta_rnn.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=RNN
// RUN: fwp-opt %models/delta_lstm.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=LSTM
// RUN: fwp-opt %models/rdn.mlir --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=RDN
//
// With exp and tanh as the polynomials that the PTX really computes.
// RUN: fwp-opt %models/delta_lstm.mlir --fwp-differentiate --test-fwp-gpu-kernels="expand-math=1" -o /dev/null | FileCheck %s --check-prefix=LSTM
// RUN: fwp-opt %models/rdn.mlir --fwp-differentiate --test-fwp-gpu-kernels="expand-math=1 seed=7" -o /dev/null | FileCheck %s --check-prefix=RDN
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-differentiate --test-fwp-gpu-kernels="expand-math=1 seed=8" -o /dev/null | FileCheck %s --check-prefix=MLP
//
// Other block sizes (one warp; many warps) and other seeds.
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-differentiate --test-fwp-gpu-kernels="block-size=32 seed=2" -o /dev/null | FileCheck %s --check-prefix=MLP
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-differentiate --test-fwp-gpu-kernels="block-size=256 seed=3" -o /dev/null | FileCheck %s --check-prefix=MLP
// RUN: fwp-opt %models/rdn.mlir --fwp-differentiate --test-fwp-gpu-kernels="block-size=1024 seed=4" -o /dev/null | FileCheck %s --check-prefix=RDN
// RUN: fwp-opt %models/delta_lstm.mlir --fwp-differentiate --test-fwp-gpu-kernels="block-size=32 seed=5 steps=3" -o /dev/null | FileCheck %s --check-prefix=LSTM
//
// Sizes that are not powers of two; d = 1; the paper's largest head.
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-specialize-dims="dims=d=5,d_ff=7" --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=MLP
// RUN: fwp-opt %models/delta_rnn.mlir --fwp-specialize-dims="dims=d=33" --fwp-differentiate --test-fwp-gpu-kernels="block-size=64" -o /dev/null | FileCheck %s --check-prefix=RNN
// RUN: fwp-opt %models/linear_transformer.mlir --fwp-specialize-dims="dims=d=1" --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=LT
// RUN: fwp-opt %models/delta_net.mlir --fwp-specialize-dims="dims=d=128" --fwp-differentiate --test-fwp-gpu-kernels="batch=1 heads=2 steps=3" -o /dev/null | FileCheck %s --check-prefix=DN
// RUN: fwp-opt %models/rdn.mlir --fwp-specialize-dims="dims=d=100" --fwp-differentiate --test-fwp-gpu-kernels="batch=1 heads=1 steps=3" -o /dev/null | FileCheck %s --check-prefix=RDN
