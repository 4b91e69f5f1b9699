// Delta MLP: a fast net of two delta-updated layers (depth 1), d_ff = 4 d_model / H.
// Per (batch, head), with sne(x) = sumnorm_eps(elu(x) + 1), eps = 1e-5:
//   a_t  = sne(LN(q_t))
//   W1_t = delta(W1_{t-1}, sne(k1_t), v1_t, sigmoid(beta1_t));  g_t = read(W1_t, a_t)
//   W2_t = delta(W2_{t-1}, sne(k2_t), v2_t, sigmoid(beta2_t))
//   y_t  = read(W2_t, sne(g_t)) + q_t
fwp.scan @delta_mlp dims(d = 16, d_ff = 64)
    seq(%q : vector<16xf32>,
        %k1 : vector<16xf32>, %v1 : vector<64xf32>, %beta1 : f32,
        %k2 : vector<64xf32>, %v2 : vector<16xf32>, %beta2 : f32)
    params(%ln_weight : vector<16xf32>, %ln_bias : vector<16xf32>)
    states(%W1 : !fwp.fast_weight<16x64xf32>, %W2 : !fwp.fast_weight<64x16xf32>)
    outputs(y : vector<16xf32>) {
  %q_ln = fwp.layer_norm %q, %ln_weight, %ln_bias eps(1.0e-05) : vector<16xf32>
  %q_elu = fwp.elu_plus_one %q_ln : vector<16xf32>
  %a = fwp.sum_norm %q_elu eps(1.0e-05) : vector<16xf32>
  %k1_elu = fwp.elu_plus_one %k1 : vector<16xf32>
  %phi_k1 = fwp.sum_norm %k1_elu eps(1.0e-05) : vector<16xf32>
  %b1 = fwp.sigmoid %beta1 : f32
  %W1_t, %v1_old = fwp.write_delta %W1, %phi_k1, %v1, %b1 : !fwp.fast_weight<16x64xf32>, vector<16xf32>, vector<64xf32>
  %g = fwp.read %W1_t, %a : !fwp.fast_weight<16x64xf32>, vector<16xf32> -> vector<64xf32>
  %k2_elu = fwp.elu_plus_one %k2 : vector<64xf32>
  %phi_k2 = fwp.sum_norm %k2_elu eps(1.0e-05) : vector<64xf32>
  %b2 = fwp.sigmoid %beta2 : f32
  %W2_t, %v2_old = fwp.write_delta %W2, %phi_k2, %v2, %b2 : !fwp.fast_weight<64x16xf32>, vector<64xf32>, vector<16xf32>
  %g_elu = fwp.elu_plus_one %g : vector<64xf32>
  %phi_g = fwp.sum_norm %g_elu eps(1.0e-05) : vector<64xf32>
  %out = fwp.read %W2_t, %phi_g : !fwp.fast_weight<64x16xf32>, vector<64xf32> -> vector<16xf32>
  %y = fwp.add %out, %q : vector<16xf32>
  fwp.yield %W1_t, %W2_t, %y : !fwp.fast_weight<16x64xf32>, !fwp.fast_weight<64x16xf32>, vector<16xf32>
}
