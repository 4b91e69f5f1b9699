// Test-only layer (ChunkwiseFormTest.cpp): a decay after the write, the
// order of a decaying weight's adjoint chain, forwards in time, with a read
// of the weight before the write and a transposed read after it (the
// decayed weight is only carried on). Per (batch, head), a_t = sigmoid(g_t):
//   W'_t = W_{t-1} + k_t (x) v_t ;  W_t = diag(a_t) W'_t
//   y_t = read(W_{t-1}, q_t) + ((W'_t x_t) . q_t) x_t
fwp.scan @decay_after_writes dims(d = 16, e = 8)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<8xf32>, %x : vector<8xf32>,
        %g : vector<16xf32>)
    states(%W : !fwp.fast_weight<16x8xf32>)
    outputs(y : vector<8xf32>) {
  %y_W = fwp.read %W, %q : !fwp.fast_weight<16x8xf32>, vector<16xf32> -> vector<8xf32>
  %W_written = fwp.write_sum %W, %k, %v : !fwp.fast_weight<16x8xf32>, vector<16xf32>, vector<8xf32>
  %u = fwp.read_transposed %W_written, %x : !fwp.fast_weight<16x8xf32>, vector<8xf32> -> vector<16xf32>
  %s = fwp.dot %u, %q : vector<16xf32>
  %u_x = fwp.scale %x, %s : vector<8xf32>
  %y = fwp.add %y_W, %u_x : vector<8xf32>
  %a = fwp.sigmoid %g : vector<16xf32>
  %W_t = fwp.scale_rows %W_written, %a : !fwp.fast_weight<16x8xf32>, vector<16xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x8xf32>, vector<8xf32>
}
