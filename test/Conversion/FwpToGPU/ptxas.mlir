// REQUIRES: ptxas
// NVIDIA's assembler accepts the PTX that fwp-compile embeds for every
// kernel of the six models (forward, training forward and backward) for sm_90
// and sm_80, and none of them spills registers at the models' sizes (at the
// block sizes fwp-compile tunes with ptxas; the pass's untuned default may
// spill a few bytes).
//
// RUN: rm -rf %t && mkdir -p %t/sm90 %t/sm80
// RUN: for m in linear_transformer delta_net delta_mlp delta_rnn delta_lstm rdn; do \
// RUN:   fwp-compile %models/$m.mlir --emit=ptx -o %t/sm90/$m || exit 1; \
// RUN:   fwp-compile %models/$m.mlir --emit=ptx --cuda-chip=sm_80 -o %t/sm80/$m || exit 1; \
// RUN: done
// RUN: ls %t/sm90/*/*.ptx | count 18
// RUN: ls %t/sm80/*/*.ptx | count 18
// RUN: for f in %t/sm90/*/*.ptx; do %ptxas -arch=sm_90 -v $f -o %t/k.cubin 2>&1 || exit 1; done | FileCheck %s
// RUN: for f in %t/sm80/*/*.ptx; do %ptxas -arch=sm_80 -v $f -o %t/k.cubin 2>&1 || exit 1; done | FileCheck %s
//
// CHECK-NOT: error
// CHECK-NOT: {{[1-9][0-9]*}} bytes spill
// CHECK: Compiling entry function 'delta_lstm_grad_kernel'
// CHECK-NOT: {{[1-9][0-9]*}} bytes spill
// CHECK: Compiling entry function 'rdn_train_kernel'
