// Delta LSTM (the paper's "Delta LSTM", code version v4). Per (batch, head), for
// each gate g in {i, u, o}, with phi = sumnorm(elu + 1):
//   W_g,t = delta(W_g, phi(k_g), v_g, sigmoid(beta_g));  z_g = read(W_g,t, phi(q_g))
//   R_g,t = delta(R_g, softmax(k_rg), v_rg, sigmoid(beta_rg))
// and with s = softmax(h_{t-1}):
//   i = sigmoid(read(R_i,t, s) + z_i);  u = read(R_u,t, s) + z_u;  o = sigmoid(read(R_o,t, s) + z_o)
//   c_t = i * u + (1 - i) * c_{t-1};  h_t = o * c_t;  y_t = h_t
fwp.scan @delta_lstm dims(d = 16)
    seq(%q_i : vector<16xf32>, %k_i : vector<16xf32>, %v_i : vector<16xf32>, %beta_i : f32,
        %k_ri : vector<16xf32>, %v_ri : vector<16xf32>, %beta_ri : f32,
        %q_u : vector<16xf32>, %k_u : vector<16xf32>, %v_u : vector<16xf32>, %beta_u : f32,
        %k_ru : vector<16xf32>, %v_ru : vector<16xf32>, %beta_ru : f32,
        %q_o : vector<16xf32>, %k_o : vector<16xf32>, %v_o : vector<16xf32>, %beta_o : f32,
        %k_ro : vector<16xf32>, %v_ro : vector<16xf32>, %beta_ro : f32)
    states(%W_i : !fwp.fast_weight<16x16xf32>, %W_u : !fwp.fast_weight<16x16xf32>, %W_o : !fwp.fast_weight<16x16xf32>,
           %R_i : !fwp.fast_weight<16x16xf32>, %R_u : !fwp.fast_weight<16x16xf32>, %R_o : !fwp.fast_weight<16x16xf32>,
           %h : vector<16xf32>, %c : vector<16xf32>)
    outputs(y : vector<16xf32>) {
  %s = fwp.softmax %h : vector<16xf32>
  // gate i
  %q_i_elu = fwp.elu_plus_one %q_i : vector<16xf32>
  %phi_q_i = fwp.sum_norm %q_i_elu : vector<16xf32>
  %k_i_elu = fwp.elu_plus_one %k_i : vector<16xf32>
  %phi_k_i = fwp.sum_norm %k_i_elu : vector<16xf32>
  %b_i = fwp.sigmoid %beta_i : f32
  %W_i_t, %v_i_old = fwp.write_delta %W_i, %phi_k_i, %v_i, %b_i : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %z_i = fwp.read %W_i_t, %phi_q_i : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %phi_k_ri = fwp.softmax %k_ri : vector<16xf32>
  %b_ri = fwp.sigmoid %beta_ri : f32
  %R_i_t, %v_ri_old = fwp.write_delta %R_i, %phi_k_ri, %v_ri, %b_ri : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %rec_i = fwp.read %R_i_t, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %pre_i = fwp.add %rec_i, %z_i : vector<16xf32>
  // gate u
  %q_u_elu = fwp.elu_plus_one %q_u : vector<16xf32>
  %phi_q_u = fwp.sum_norm %q_u_elu : vector<16xf32>
  %k_u_elu = fwp.elu_plus_one %k_u : vector<16xf32>
  %phi_k_u = fwp.sum_norm %k_u_elu : vector<16xf32>
  %b_u = fwp.sigmoid %beta_u : f32
  %W_u_t, %v_u_old = fwp.write_delta %W_u, %phi_k_u, %v_u, %b_u : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %z_u = fwp.read %W_u_t, %phi_q_u : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %phi_k_ru = fwp.softmax %k_ru : vector<16xf32>
  %b_ru = fwp.sigmoid %beta_ru : f32
  %R_u_t, %v_ru_old = fwp.write_delta %R_u, %phi_k_ru, %v_ru, %b_ru : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %rec_u = fwp.read %R_u_t, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %pre_u = fwp.add %rec_u, %z_u : vector<16xf32>
  // gate o
  %q_o_elu = fwp.elu_plus_one %q_o : vector<16xf32>
  %phi_q_o = fwp.sum_norm %q_o_elu : vector<16xf32>
  %k_o_elu = fwp.elu_plus_one %k_o : vector<16xf32>
  %phi_k_o = fwp.sum_norm %k_o_elu : vector<16xf32>
  %b_o = fwp.sigmoid %beta_o : f32
  %W_o_t, %v_o_old = fwp.write_delta %W_o, %phi_k_o, %v_o, %b_o : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %z_o = fwp.read %W_o_t, %phi_q_o : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %phi_k_ro = fwp.softmax %k_ro : vector<16xf32>
  %b_ro = fwp.sigmoid %beta_ro : f32
  %R_o_t, %v_ro_old = fwp.write_delta %R_o, %phi_k_ro, %v_ro, %b_ro : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %rec_o = fwp.read %R_o_t, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %pre_o = fwp.add %rec_o, %z_o : vector<16xf32>
  %i = fwp.sigmoid %pre_i : vector<16xf32>
  %o = fwp.sigmoid %pre_o : vector<16xf32>
  %one = fwp.constant 1.0 : vector<16xf32>
  %keep = fwp.sub %one, %i : vector<16xf32>
  %new = fwp.mul %i, %pre_u : vector<16xf32>
  %old = fwp.mul %keep, %c : vector<16xf32>
  %c_t = fwp.add %new, %old : vector<16xf32>
  %h_t = fwp.mul %o, %c_t : vector<16xf32>
  fwp.yield %W_i_t, %W_u_t, %W_o_t, %R_i_t, %R_u_t, %R_o_t, %h_t, %c_t, %h_t : !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
}
