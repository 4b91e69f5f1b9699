// Delta RNN (the paper's "Delta RNN", code version v2). Per (batch, head),
// phi = sumnorm(elu + 1):
//   W_t = delta(W_{t-1}, phi(k_t), v_t, sigmoid(beta_t));  z_t = read(W_t, phi(q_t))
//   R_t = delta(R_{t-1}, softmax(k_r_t), v_r_t, sigmoid(beta_r_t))
//   y_t = z_t + read(R_t, softmax(y_{t-1}))
fwp.scan @delta_rnn dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %beta : f32,
        %k_r : vector<16xf32>, %v_r : vector<16xf32>, %beta_r : f32)
    states(%W : !fwp.fast_weight<16x16xf32>, %R : !fwp.fast_weight<16x16xf32>,
           %y : vector<16xf32>)
    outputs(y : vector<16xf32>) {
  %q_elu = fwp.elu_plus_one %q : vector<16xf32>
  %phi_q = fwp.sum_norm %q_elu : vector<16xf32>
  %k_elu = fwp.elu_plus_one %k : vector<16xf32>
  %phi_k = fwp.sum_norm %k_elu : vector<16xf32>
  %b = fwp.sigmoid %beta : f32
  %W_t, %v_old = fwp.write_delta %W, %phi_k, %v, %b : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %z = fwp.read %W_t, %phi_q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %phi_k_r = fwp.softmax %k_r : vector<16xf32>
  %b_r = fwp.sigmoid %beta_r : f32
  %R_t, %v_r_old = fwp.write_delta %R, %phi_k_r, %v_r, %b_r : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %s = fwp.softmax %y : vector<16xf32>
  %rec = fwp.read %R_t, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %y_t = fwp.add %z, %rec : vector<16xf32>
  fwp.yield %W_t, %R_t, %y_t, %y_t : !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
}
