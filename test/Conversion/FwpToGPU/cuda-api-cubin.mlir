// REQUIRES: ptxas
// With ptxas installed, compileScansForCuda also assembles a cubin per
// kernel, and the manifest entry names its symbol.
// RUN: fwp-opt %models/delta_lstm.mlir --fwp-differentiate --test-fwp-cuda-compile="cubin=1 chip=sm_80" -o /dev/null | FileCheck %s

// CHECK: forward: {{.*}}"chip":"sm_80","cubin_bytes":{{[1-9][0-9]*}},"cubin_symbol":"fwp_cubin_delta_lstm_kernel"
// CHECK: delta_lstm_kernel: ptx {{[0-9]+}} bytes, cubin elf
// CHECK: forward_train: {{.*}}"cubin_symbol":"fwp_cubin_delta_lstm_train_kernel"
// CHECK: delta_lstm_train_kernel: ptx {{[0-9]+}} bytes, cubin elf
// CHECK: backward: {{.*}}"cubin_symbol":"fwp_cubin_delta_lstm_grad_kernel"
// CHECK: delta_lstm_grad_kernel: ptx {{[0-9]+}} bytes, cubin elf
