// Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025). Per (batch, head),
// with l2n(x) = x / sqrt(sum x^2 + 1e-6), a_t = sigmoid(alpha_t) the decay
// and b_t = sigmoid(beta_t) the write rate:
//   W_t = delta(a_t W_{t-1}, l2n(k_t), v_t, b_t)
//   y_t = read(W_t, l2n(q_t) / sqrt(d))
// The decay makes the write non-invertible: the backward checkpoints W.
fwp.scan @gated_delta_net dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %beta : f32, %alpha : f32)
    states(%W : !fwp.fast_weight<16x16xf32>)
    outputs(y : vector<16xf32>) {
  %a = fwp.sigmoid %alpha : f32
  %b = fwp.sigmoid %beta : f32
  %phi_k = fwp.l2_norm %k : vector<16xf32>
  %q_n = fwp.l2_norm %q : vector<16xf32>
  %phi_q = fwp.scale_const %q_n size_power(-5.000000e-01) : vector<16xf32>
  %W_decayed = fwp.scale_weight %W, %a : !fwp.fast_weight<16x16xf32>
  %W_t, %v_old = fwp.write_delta %W_decayed, %phi_k, %v, %b : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y = fwp.read %W_t, %phi_q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
