// Recurrent Delta Net. Per (batch, head), with s_t = tanh(y_{t-1}) and
// (s R)[j] = sum_i s[i] R[i, j] = read(R, s):
//   q~ = softmax(q_t + s R_q);  k~ = softmax(k_t + s R_k);  v~ = v_t + s R_v
//   b~ = sigmoid(beta_t + s . r_b)
//   W_t = delta(W_{t-1}, k~, v~, b~);  y_t = read(W_t, q~)
fwp.scan @rdn dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %beta : f32)
    params(%R_q : !fwp.fast_weight<16x16xf32>, %R_k : !fwp.fast_weight<16x16xf32>,
           %R_v : !fwp.fast_weight<16x16xf32>, %r_b : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x16xf32>, %y : vector<16xf32>)
    outputs(y : vector<16xf32>) {
  %s = fwp.tanh %y : vector<16xf32>
  %sR_q = fwp.read %R_q, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %q_pre = fwp.add %q, %sR_q : vector<16xf32>
  %q_rec = fwp.softmax %q_pre : vector<16xf32>
  %sR_k = fwp.read %R_k, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %k_pre = fwp.add %k, %sR_k : vector<16xf32>
  %k_rec = fwp.softmax %k_pre : vector<16xf32>
  %sR_v = fwp.read %R_v, %s : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %v_rec = fwp.add %v, %sR_v : vector<16xf32>
  %s_r_b = fwp.dot %s, %r_b : vector<16xf32>
  %beta_pre = fwp.add %beta, %s_r_b : f32
  %b = fwp.sigmoid %beta_pre : f32
  %W_t, %v_old = fwp.write_delta %W, %k_rec, %v_rec, %b : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y_t = fwp.read %W_t, %q_rec : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W_t, %y_t, %y_t : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
}
