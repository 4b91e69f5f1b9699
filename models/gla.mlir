// Gated linear attention (Yang et al. 2024). Per (batch, head), one decay
// per key row, a_t = sigmoid(g_t) in (0, 1)^d:
//   W_t[e, m] = a_t[e] W_{t-1}[e, m] + k_t[e] v_t[m];  y_t = read(W_t, q_t)
fwp.scan @gla dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %g : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x16xf32>)
    outputs(y : vector<16xf32>) {
  %a = fwp.sigmoid %g : vector<16xf32>
  %W_decayed = fwp.scale_rows %W, %a : !fwp.fast_weight<16x16xf32>, vector<16xf32>
  %W_t = fwp.write_sum %W_decayed, %k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y = fwp.read %W_t, %q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
