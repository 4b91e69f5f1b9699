// Test-only layer (ChunkwiseFormTest.cpp): Gated DeltaNet's decayed delta
// rule forwards in time, read both ways, with a transposed read of the
// decayed weight before the write. Per (batch, head), a_t = sigmoid(alpha_t),
// b_t = sigmoid(beta_t):
//   W_t = delta(a_t W_{t-1}, l2n(k_t), v_t, b_t) ;  u_t = W_t x_t
//   r_t = a_t W_{t-1} x_t ;  y_t = read(W_t, q_t) + (u_t . q_t) x_t + (r_t . k_t) v_t
// (the runtime's layers have one output; %r comes before the write, where
// fwp-fuse leaves it a read of the old weight).
fwp.scan @gated_delta_transposed dims(d = 16, e = 8)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<8xf32>, %x : vector<8xf32>,
        %beta : f32, %alpha : f32)
    states(%W : !fwp.fast_weight<16x8xf32>)
    outputs(y : vector<8xf32>) {
  %a = fwp.sigmoid %alpha : f32
  %b = fwp.sigmoid %beta : f32
  %phi_k = fwp.l2_norm %k : vector<16xf32>
  %W_decayed = fwp.scale_weight %W, %a : !fwp.fast_weight<16x8xf32>
  %r = fwp.read_transposed %W_decayed, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %W_t, %v_old = fwp.write_delta %W_decayed, %phi_k, %v, %b : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %y_W = fwp.read %W_t, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %u = fwp.read_transposed %W_t, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %s_u = fwp.dot %u, %q : vector<16xf32>
  %u_x = fwp.scale %x, %s_u : vector<8xf32>
  %y_u = fwp.add %y_W, %u_x : vector<8xf32>
  %s_r = fwp.dot %r, %k : vector<16xf32>
  %r_v = fwp.scale %v, %s_r : vector<8xf32>
  %y = fwp.add %y_u, %r_v : vector<8xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x8xf32>, vector<8xf32>
}
