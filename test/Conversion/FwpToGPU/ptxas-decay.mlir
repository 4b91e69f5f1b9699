// REQUIRES: ptxas
// NVIDIA's assembler accepts the PTX of every kernel of the decaying layers
// and delta_product (forward, training forward and backward, and
// gated_delta_net's deferred products) for sm_90.
//
// RUN: rm -rf %t && mkdir -p %t/sm90
// RUN: for m in gated_delta_net retnet gla delta_product; do \
// RUN:   fwp-opt %models/$m.mlir --fwp-decompose --fwp-differentiate --fwp-gpu-to-ptx --fwp-gpu-dump-isa=dir=%t/sm90 -o /dev/null || exit 1; \
// RUN: done
// RUN: ls %t/sm90/*.ptx | count 13
// RUN: for f in %t/sm90/*.ptx; do %ptxas -arch=sm_90 -v $f -o %t/k.cubin 2>&1 || exit 1; done | FileCheck %s
//
// CHECK-NOT: error
// CHECK: Compiling entry function 'gated_delta_net_deferred_kernel'
// CHECK: Compiling entry function 'gated_delta_net_grad_kernel'
