// Test-only layer (ChunkwiseFormTest.cpp): two writes per step on one fast
// weight (micro-steps of the chunkwise form), a sum write and then a delta
// write, no decay, read before, between and after the writes, both ways,
// K != V. Per (batch, head), b_t = sigmoid(beta_t):
//   W'_t = W_{t-1} + k1_t (x) v1_t ;  W_t = delta(W'_t, l2n(k2_t), v2_t, b_t)
//   r_t = read(W_{t-1}, q_t) ;  u_t = W'_t x_t ;  m_t = read(W'_t, l2n(k2_t))
//   y_t = read(W_t, q_t) + r_t + (u_t . q_t) x_t + (W_t v1_t . k1_t) v2_t + m_t
// (the runtime's layers have one output; m_t is the delta write's own
// retrieval).
fwp.scan @two_writes dims(d = 16, e = 8)
    seq(%q : vector<16xf32>, %k1 : vector<16xf32>, %v1 : vector<8xf32>, %k2 : vector<16xf32>,
        %v2 : vector<8xf32>, %x : vector<8xf32>, %beta : f32)
    states(%W : !fwp.fast_weight<16x8xf32>)
    outputs(y : vector<8xf32>) {
  %b = fwp.sigmoid %beta : f32
  %phi_k2 = fwp.l2_norm %k2 : vector<16xf32>
  %r = fwp.read %W, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %W_1 = fwp.write_sum %W, %k1, %v1 : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %u = fwp.read_transposed %W_1, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %W_t, %m = fwp.write_delta %W_1, %phi_k2, %v2, %b : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %y_W = fwp.read %W_t, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %z = fwp.read_transposed %W_t, %v1 : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %y_r = fwp.add %y_W, %r : vector<8xf32>
  %s_u = fwp.dot %u, %q : vector<16xf32>
  %u_x = fwp.scale %x, %s_u : vector<8xf32>
  %y_u = fwp.add %y_r, %u_x : vector<8xf32>
  %s_z = fwp.dot %z, %k1 : vector<16xf32>
  %z_v = fwp.scale %v2, %s_z : vector<8xf32>
  %y_z = fwp.add %y_u, %z_v : vector<8xf32>
  %y = fwp.add %y_z, %m : vector<8xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x8xf32>, vector<8xf32>
}
