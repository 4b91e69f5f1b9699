// Test-only layer (ChunkwiseFormTest.cpp): a sum write taken backwards in
// time, read both ways. Per (batch, head), t from T - 1 down to 0:
//   W_t = W_{t+1} + k_t (x) v_t ;  u_t = W_t x_t
//   y_t = read(W_t, q_t) + (u_t . q_t) x_t   (the runtime's layers have one output)
fwp.scan @reverse_sum reverse dims(d = 16, e = 8)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<8xf32>, %x : vector<8xf32>)
    states(%W : !fwp.fast_weight<16x8xf32>)
    outputs(y : vector<8xf32>) {
  %W_t = fwp.write_sum %W, %k, %v : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %y_W = fwp.read %W_t, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %u = fwp.read_transposed %W_t, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %s_u = fwp.dot %u, %q : vector<16xf32>
  %u_x = fwp.scale %x, %s_u : vector<8xf32>
  %y = fwp.add %y_W, %u_x : vector<8xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x8xf32>, vector<8xf32>
}
