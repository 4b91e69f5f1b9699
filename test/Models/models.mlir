// Every paper model parses, verifies, round-trips, differentiates and lowers
// to the LLVM dialect, in fwp-opt and (see plugin.mlir) in the stock mlir-opt.
//
// RUN: fwp-opt %models/linear_transformer.mlir | fwp-opt | FileCheck %s --check-prefix=LT
// RUN: fwp-opt %models/delta_net.mlir | fwp-opt | FileCheck %s --check-prefix=DN
// RUN: fwp-opt %models/delta_mlp.mlir | fwp-opt | FileCheck %s --check-prefix=MLP
// RUN: fwp-opt %models/delta_rnn.mlir | fwp-opt | FileCheck %s --check-prefix=RNN
// RUN: fwp-opt %models/delta_lstm.mlir | fwp-opt | FileCheck %s --check-prefix=LSTM
// RUN: fwp-opt %models/rdn.mlir | fwp-opt | FileCheck %s --check-prefix=RDN
//
// RUN: fwp-opt %models/linear_transformer.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=linear_transformer
// RUN: fwp-opt %models/delta_net.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=delta_net
// RUN: fwp-opt %models/delta_mlp.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=delta_mlp
// RUN: fwp-opt %models/delta_rnn.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=delta_rnn
// RUN: fwp-opt %models/delta_lstm.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=delta_lstm
// RUN: fwp-opt %models/rdn.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=rdn
//
// The decaying layers (MODELS.md, "Beyond the paper"): IR only.
// RUN: fwp-opt %models/gated_delta_net.mlir | fwp-opt | FileCheck %s --check-prefix=GDN
// RUN: fwp-opt %models/retnet.mlir | fwp-opt | FileCheck %s --check-prefix=RET
// RUN: fwp-opt %models/gla.mlir | fwp-opt | FileCheck %s --check-prefix=GLA
// RUN: fwp-opt %models/gated_delta_net.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=gated_delta_net
// RUN: fwp-opt %models/retnet.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=retnet
// RUN: fwp-opt %models/gla.mlir --fwp-pipeline | FileCheck %s --check-prefix=LOWERED -DL=gla

// LT: fwp.scan @linear_transformer dims(d = 16)
// LT-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>)
// LT-NEXT: states(%W: !fwp.fast_weight<16x16xf32>, %z: vector<16xf32>)
// LT-NEXT: outputs(y : vector<16xf32>)

// DN: fwp.scan @delta_net dims(d = 16)
// DN-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>, %beta: f32)
// DN-NEXT: states(%W: !fwp.fast_weight<16x16xf32>)
// DN: fwp.write_delta

// MLP: fwp.scan @delta_mlp dims(d = 16, d_ff = 64)
// MLP-NEXT: seq(%q: vector<16xf32>, %k1: vector<16xf32>, %v1: vector<64xf32>, %beta1: f32, %k2: vector<64xf32>, %v2: vector<16xf32>, %beta2: f32)
// MLP-NEXT: params(%ln_weight: vector<16xf32>, %ln_bias: vector<16xf32>)
// MLP-NEXT: states(%W1: !fwp.fast_weight<16x64xf32>, %W2: !fwp.fast_weight<64x16xf32>)

// RNN: fwp.scan @delta_rnn dims(d = 16)
// RNN-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>, %beta: f32, %k_r: vector<16xf32>, %v_r: vector<16xf32>, %beta_r: f32)
// RNN-NEXT: states(%W: !fwp.fast_weight<16x16xf32>, %R: !fwp.fast_weight<16x16xf32>, %y: vector<16xf32>)

// LSTM: fwp.scan @delta_lstm dims(d = 16)
// LSTM-NEXT: seq(%q_i: vector<16xf32>, %k_i: vector<16xf32>, %v_i: vector<16xf32>, %beta_i: f32, %k_ri: vector<16xf32>, %v_ri: vector<16xf32>, %beta_ri: f32, %q_u:
// LSTM-NEXT: states(%W_i: !fwp.fast_weight<16x16xf32>, %W_u: !fwp.fast_weight<16x16xf32>, %W_o: !fwp.fast_weight<16x16xf32>, %R_i: !fwp.fast_weight<16x16xf32>, %R_u: !fwp.fast_weight<16x16xf32>, %R_o: !fwp.fast_weight<16x16xf32>, %h: vector<16xf32>, %c: vector<16xf32>)

// RDN: fwp.scan @rdn dims(d = 16)
// RDN-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>, %beta: f32)
// RDN-NEXT: params(%R_q: !fwp.fast_weight<16x16xf32>, %R_k: !fwp.fast_weight<16x16xf32>, %R_v: !fwp.fast_weight<16x16xf32>, %r_b: vector<16xf32>)
// RDN-NEXT: states(%W: !fwp.fast_weight<16x16xf32>, %y: vector<16xf32>)

// GDN: fwp.scan @gated_delta_net dims(d = 16)
// GDN-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>, %beta: f32, %alpha: f32)
// GDN-NEXT: states(%W: !fwp.fast_weight<16x16xf32>)
// GDN: fwp.scale_weight
// GDN: fwp.write_delta

// RET: fwp.scan @retnet dims(d = 16)
// RET-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>)
// RET-NEXT: params(%decay: f32)
// RET-NEXT: states(%W: !fwp.fast_weight<16x16xf32>)
// RET-NEXT: outputs(y : vector<16xf32>) attributes {fwp.param_init = {decay = "linspace:3.0:7.0"}}

// GLA: fwp.scan @gla dims(d = 16)
// GLA-NEXT: seq(%q: vector<16xf32>, %k: vector<16xf32>, %v: vector<16xf32>, %g: vector<16xf32>)
// GLA: fwp.scale_rows

// LOWERED-DAG: llvm.func @fwp_[[L]](%{{.*}}: i64, %{{.*}}: !llvm.ptr)
// LOWERED-DAG: llvm.func @fwp_[[L]]_train(%{{.*}}: i64, %{{.*}}: !llvm.ptr)
// LOWERED-DAG: llvm.func @fwp_[[L]]_grad(%{{.*}}: i64, %{{.*}}: !llvm.ptr)
// LOWERED-NOT: fwp.
