// compileScansForCuda (include/fwp/Target/Cuda.h), the API fwp-compile
// calls, through its test pass: one manifest entry per kernel role.
// RUN: fwp-opt %models/rdn.mlir --fwp-differentiate --test-fwp-cuda-compile -o /dev/null | FileCheck %s

// CHECK: forward: {"args":[{"name":"q","role":"seq","shape":["B","H",-1,16]},{"name":"k","role":"seq","shape":["B","H",-1,16]},{"name":"v","role":"seq","shape":["B","H",-1,16]},{"name":"beta","role":"seq","shape":["B","H",-1]},{"name":"R_q","role":"param","shape":["H",16,16]},{"name":"R_k","role":"param","shape":["H",16,16]},{"name":"R_v","role":"param","shape":["H",16,16]},{"name":"r_b","role":"param","shape":["H",16]},{"name":"W","role":"state","shape":["B","H",16,16]},{"name":"y","role":"state","shape":["B","H",16]},{"name":"y","role":"output","shape":["B","H",-1,16]}]
// CHECK-SAME: "block":[32,1,1],"chip":"sm_90","dtype":"f32","grid":["B*H",1,1],"kernel":"rdn_kernel","ptx_symbol":"fwp_ptx_rdn_kernel","scalar_args":["B","H","T"],"scan":"rdn","shared_bytes":{{[0-9]+}}}
// CHECK: rdn_kernel: ptx {{[0-9]+}} bytes, cubin none
// CHECK: forward_train: {"args":[
// CHECK-SAME: {"name":"tape.W.0.key","role":"tape","shape":["B","H",-1,16]},{"name":"tape.W.0.delta","role":"tape","shape":["B","H",-1,16]},{"name":"tape.W.0.rate","role":"tape","shape":["B","H",-1]},{"name":"tape.y.prev","role":"tape","shape":["B","H",-1,16]}]
// CHECK-SAME: "kernel":"rdn_train_kernel"
// The backward kernel: grad_output and tape in, the gradients of the
// initial states (grad_state) and params (grad_param, per (b, h): the
// runtime sums over B) in/out, grad_seq out.
// CHECK: backward: {"args":[{"name":"q","role":"seq","shape":["B","H",-1,16]},{"name":"k","role":"seq","shape":["B","H",-1,16]},{"name":"v","role":"seq","shape":["B","H",-1,16]},{"name":"beta","role":"seq","shape":["B","H",-1]},{"name":"y","role":"grad_output","shape":["B","H",-1,16]},{"name":"tape.W.0.key","role":"tape","shape":["B","H",-1,16]},{"name":"tape.W.0.delta","role":"tape","shape":["B","H",-1,16]},{"name":"tape.W.0.rate","role":"tape","shape":["B","H",-1]},{"name":"tape.y.prev","role":"tape","shape":["B","H",-1,16]},{"name":"R_q","role":"param","shape":["H",16,16]},{"name":"R_k","role":"param","shape":["H",16,16]},{"name":"R_v","role":"param","shape":["H",16,16]},{"name":"r_b","role":"param","shape":["H",16]},{"name":"W","role":"state","shape":["B","H",16,16]},{"name":"W","role":"grad_state","shape":["B","H",16,16]},{"name":"y","role":"grad_state","shape":["B","H",16]},{"name":"R_q","role":"grad_param","shape":["B","H",16,16]},{"name":"R_k","role":"grad_param","shape":["B","H",16,16]},{"name":"R_v","role":"grad_param","shape":["B","H",16,16]},{"name":"r_b","role":"grad_param","shape":["B","H",16]},{"name":"q","role":"grad_seq","shape":["B","H",-1,16]},{"name":"k","role":"grad_seq","shape":["B","H",-1,16]},{"name":"v","role":"grad_seq","shape":["B","H",-1,16]},{"name":"beta","role":"grad_seq","shape":["B","H",-1]}]
// CHECK-SAME: "kernel":"rdn_grad_kernel","ptx_symbol":"fwp_ptx_rdn_grad_kernel"
// CHECK: rdn_grad_kernel: ptx {{[0-9]+}} bytes, cubin none

// dir=... writes a kernel bundle: kernels.json and one .ptx per kernel.
// RUN: rm -rf %t && fwp-opt %models/delta_net.mlir --fwp-specialize-dims="dims=d=8" --fwp-differentiate --test-fwp-cuda-compile="dir=%t" -o /dev/null
// RUN: FileCheck %s --check-prefix=BUNDLE --input-file=%t/kernels.json
// RUN: FileCheck %s --check-prefix=PTX --input-file=%t/delta_net_grad_kernel.ptx
// BUNDLE-DAG: "layer": "delta_net"
// BUNDLE-DAG: "d": 8
// BUNDLE-DAG: "forward_train": {
// BUNDLE-DAG: "kernel": "delta_net_grad_kernel"
// PTX: .visible .entry delta_net_grad_kernel(
