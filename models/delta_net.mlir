// Delta Net (Schlag et al. 2021). Per (batch, head), phi = sumnorm(elu + 1):
//   W_t = W_{t-1} + phi(k_t) (x) sigmoid(beta_t) (v_t - read(W_{t-1}, phi(k_t)))
//   y_t = read(W_t, phi(q_t))
fwp.scan @delta_net dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %beta : f32)
    states(%W : !fwp.fast_weight<16x16xf32>)
    outputs(y : vector<16xf32>) {
  %q_elu = fwp.elu_plus_one %q : vector<16xf32>
  %phi_q = fwp.sum_norm %q_elu : vector<16xf32>
  %k_elu = fwp.elu_plus_one %k : vector<16xf32>
  %phi_k = fwp.sum_norm %k_elu : vector<16xf32>
  %b = fwp.sigmoid %beta : f32
  %W_t, %v_old = fwp.write_delta %W, %phi_k, %v, %b : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y = fwp.read %W_t, %phi_q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
