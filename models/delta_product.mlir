// DeltaProduct (Siems et al. 2025, "DeltaProduct: Improving State-Tracking
// in Linear RNNs via Householder Products"), n_h = 2: each token takes two
// delta-rule steps on the fast weight, each with its own key, value and
// rate; keys and queries are L2-normalised (l2n as in gated_delta_net):
//   W' = delta(W_{t-1}, l2n(k1_t), v1_t, sigmoid(beta1_t))
//   W_t = delta(W', l2n(k2_t), v2_t, sigmoid(beta2_t))
//   y_t = read(W_t, l2n(q_t))
// Both writes are invertible: the backward inverts them (no memory per step).
// Written by following docs/writing-a-layer.md.
fwp.scan @delta_product dims(d = 16)
    seq(%q : vector<16xf32>, %k1 : vector<16xf32>, %v1 : vector<16xf32>, %beta1 : f32,
        %k2 : vector<16xf32>, %v2 : vector<16xf32>, %beta2 : f32)
    states(%W : !fwp.fast_weight<16x16xf32>)
    outputs(y : vector<16xf32>) {
  %phi_k1 = fwp.l2_norm %k1 : vector<16xf32>
  %b1 = fwp.sigmoid %beta1 : f32
  %W_1, %v_old1 = fwp.write_delta %W, %phi_k1, %v1, %b1 : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %phi_k2 = fwp.l2_norm %k2 : vector<16xf32>
  %b2 = fwp.sigmoid %beta2 : f32
  %W_t, %v_old2 = fwp.write_delta %W_1, %phi_k2, %v2, %b2 : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %phi_q = fwp.l2_norm %q : vector<16xf32>
  %y = fwp.read %W_t, %phi_q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
