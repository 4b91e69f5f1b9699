// REQUIRES: plugin
// The dialect and the passes load into Debian's stock mlir-opt.
// RUN: %mlir_opt --load-dialect-plugin=%fwp_plugin %models/rdn.mlir | FileCheck %s
// RUN: %mlir_opt --load-dialect-plugin=%fwp_plugin %models/delta_lstm.mlir | FileCheck %s --check-prefix=LSTM
// RUN: %mlir_opt --load-dialect-plugin=%fwp_plugin --load-pass-plugin=%fwp_plugin %models/delta_net.mlir --pass-pipeline="builtin.module(fwp-differentiate)" | FileCheck %s --check-prefix=GRAD

// CHECK: fwp.scan @rdn dims(d = 16)
// CHECK: fwp.write_delta
// LSTM: fwp.scan @delta_lstm dims(d = 16)
// GRAD: fwp.scan @delta_net_grad reverse
