// Test-only layer (ChunkwiseFormTest.cpp): decay_two_writes.mlir taken
// backwards in time: a decay of the rows and then two writes per step on
// one fast weight (micro-steps of the chunkwise form), a delta write and
// then a sum write, read before, between and after the writes, both ways,
// K != V. Per (batch, head), t from T - 1 down to 0, a_t = sigmoid(g_t),
// b_t = sigmoid(beta_t):
//   D_t = diag(a_t) W_{t+1} ;  W'_t = delta(D_t, l2n(k1_t), v1_t, b_t)
//   W_t = W'_t + k2_t (x) v2_t
//   r_t = D_t x_t ;  m_t = read(W'_t, q_t) ;  u_t = W_t x_t
//   y_t = read(W_t, q_t) + m_t + (u_t . q_t) x_t + (r_t . k2_t) v2_t
fwp.scan @reverse_decay_two_writes reverse dims(d = 16, e = 8)
    seq(%q : vector<16xf32>, %k1 : vector<16xf32>, %v1 : vector<8xf32>, %beta : f32,
        %k2 : vector<16xf32>, %v2 : vector<8xf32>, %x : vector<8xf32>, %g : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x8xf32>)
    outputs(y : vector<8xf32>) {
  %a = fwp.sigmoid %g : vector<16xf32>
  %b = fwp.sigmoid %beta : f32
  %phi_k1 = fwp.l2_norm %k1 : vector<16xf32>
  %W_decayed = fwp.scale_rows %W, %a : !fwp.fast_weight<16x8xf32>, vector<16xf32>
  %r = fwp.read_transposed %W_decayed, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %W_1, %v_old = fwp.write_delta %W_decayed, %phi_k1, %v1, %b : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %m = fwp.read %W_1, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %W_t = fwp.write_sum %W_1, %k2, %v2 : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %y_W = fwp.read %W_t, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %u = fwp.read_transposed %W_t, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %y_m = fwp.add %y_W, %m : vector<8xf32>
  %s_u = fwp.dot %u, %q : vector<16xf32>
  %u_x = fwp.scale %x, %s_u : vector<8xf32>
  %y_u = fwp.add %y_m, %u_x : vector<8xf32>
  %s_r = fwp.dot %r, %k2 : vector<16xf32>
  %r_v = fwp.scale %v2, %s_r : vector<8xf32>
  %y = fwp.add %y_u, %r_v : vector<8xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x8xf32>, vector<8xf32>
}
