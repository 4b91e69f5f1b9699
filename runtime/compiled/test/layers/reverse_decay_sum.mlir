// Test-only layer (ChunkwiseFormTest.cpp): gla's decayed sum write taken
// backwards in time, with transposed reads of the decayed weight before the
// write and of the weight after it. Per (batch, head), t from T - 1 down
// to 0, a_t = sigmoid(g_t):
//   W_t = diag(a_t) W_{t+1} + k_t (x) v_t ;  u_t = W_t x_t
//   r_t = diag(a_t) W_{t+1} v_t ;  y_t = read(W_t, q_t) + (u_t . q_t) x_t + (r_t . k_t) v_t
// (the runtime's layers have one output; %r comes before the write, where
// fwp-fuse leaves it a read of the old weight).
fwp.scan @reverse_decay_sum reverse dims(d = 16, e = 8)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<8xf32>, %x : vector<8xf32>,
        %g : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x8xf32>)
    outputs(y : vector<8xf32>) {
  %a = fwp.sigmoid %g : vector<16xf32>
  %W_decayed = fwp.scale_rows %W, %a : !fwp.fast_weight<16x8xf32>, vector<16xf32>
  %r = fwp.read_transposed %W_decayed, %v : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %W_t = fwp.write_sum %W_decayed, %k, %v : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
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
