// Linear Transformer (Katharopoulos et al. 2020), with its normaliser.
// Per (batch, head), phi = elu + 1:
//   W_t = W_{t-1} + phi(k_t) (x) v_t ;  z_t = z_{t-1} + phi(k_t)
//   y_t = read(W_t, phi(q_t)) / (z_t . phi(q_t) + 1e-5)
fwp.scan @linear_transformer dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x16xf32>, %z : vector<16xf32>)
    outputs(y : vector<16xf32>) {
  %phi_q = fwp.elu_plus_one %q : vector<16xf32>
  %phi_k = fwp.elu_plus_one %k : vector<16xf32>
  %W_t = fwp.write_sum %W, %phi_k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %z_t = fwp.add %z, %phi_k : vector<16xf32>
  %num = fwp.read %W_t, %phi_q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  %dot = fwp.dot %z_t, %phi_q : vector<16xf32>
  %eps = fwp.constant 1.0e-05 : f32
  %den = fwp.add %dot, %eps : f32
  %one = fwp.constant 1.0 : f32
  %inv = fwp.div %one, %den : f32
  %y = fwp.scale %num, %inv : vector<16xf32>
  fwp.yield %W_t, %z_t, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
}
