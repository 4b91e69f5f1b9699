// The kernels of the decaying layers (and delta_product), under the backward
// strategies their IR differs by, run on the simulated GPU of
// test-fwp-gpu-kernels and agree with the scans' own semantics: the decay
// ops (fwp.scale_rows, fwp.row_dot, fwp.sqrt), a stored state read as a
// matrix per step by the backward and written as one by the training forward,
// and the energy form's kernels (the backward's energy and deferred values
// compared too; gated_delta_net's deferred products).
//
// RUN: fwp-opt %models/gated_delta_net.mlir --fwp-decompose --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=GDN
// RUN: fwp-opt %models/retnet.mlir --fwp-decompose --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=RET
// RUN: fwp-opt %models/gla.mlir --fwp-decompose --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=GLA
// RUN: fwp-opt %models/delta_product.mlir --fwp-decompose --fwp-differentiate --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=DP
//
// After fwp-compile's whole front end, other sizes and block sizes.
// RUN: fwp-opt %models/gated_delta_net.mlir --fwp-specialize-dims="dims=d=5" --fwp-decompose --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels="block-size=32 seed=3" -o /dev/null | FileCheck %s --check-prefix=GDN
// RUN: fwp-opt %models/gla.mlir --fwp-specialize-dims="dims=d=33" --fwp-decompose --canonicalize --fwp-differentiate --canonicalize --cse --fwp-fuse --canonicalize --cse --test-fwp-gpu-kernels="block-size=64 expand-math=1" -o /dev/null | FileCheck %s --check-prefix=GLA
// RUN: fwp-opt %models/retnet.mlir --fwp-specialize-dims="dims=d=7" --fwp-decompose --fwp-differentiate --test-fwp-gpu-kernels="block-size=256 seed=4" -o /dev/null | FileCheck %s --check-prefix=RET
//
// delta_net with its state stored instead of inverted.
// RUN: fwp-opt %models/delta_net.mlir --fwp-specialize-dims="dims=d=9" --fwp-decompose --fwp-differentiate="backward=store" --test-fwp-gpu-kernels -o /dev/null | FileCheck %s --check-prefix=DN
//
// GDN: @gated_delta_net_kernel ok
// GDN: @gated_delta_net_train_kernel ok
// GDN: @gated_delta_net_grad_kernel ok
// GDN: @gated_delta_net_deferred_kernel ok
// RET: @retnet_kernel ok
// RET: @retnet_train_kernel ok
// RET: @retnet_grad_kernel ok
// GLA: @gla_kernel ok
// GLA: @gla_train_kernel ok
// GLA: @gla_grad_kernel ok
// DP: @delta_product_kernel ok
// DP: @delta_product_train_kernel ok
// DP: @delta_product_grad_kernel ok
// DN: @delta_net_kernel ok
// DN: @delta_net_train_kernel ok
// DN: @delta_net_grad_kernel ok
