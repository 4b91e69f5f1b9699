// A scan whose DPFP feature size (2 * nu * d = 64) equals another dim (d_ff):
// input of test/Dialect/Fwp/specialize-dims.mlir.
fwp.scan @dpfp_ff dims(d = 16, d_ff = 64)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>, %u : vector<64xf32>)
    states(%W : !fwp.fast_weight<64x16xf32>)
    outputs(y : vector<16xf32>, z : vector<64xf32>) {
  %fk = fwp.dpfp %k nu(2) : vector<16xf32> -> vector<64xf32>
  %fq = fwp.dpfp %q nu(2) : vector<16xf32> -> vector<64xf32>
  %W1 = fwp.write_sum %W, %fk, %v : !fwp.fast_weight<64x16xf32>, vector<64xf32>, vector<16xf32>
  %y = fwp.read %W1, %fq : !fwp.fast_weight<64x16xf32>, vector<64xf32> -> vector<16xf32>
  %z = fwp.sigmoid %u : vector<64xf32>
  fwp.yield %W1, %y, %z : !fwp.fast_weight<64x16xf32>, vector<16xf32>, vector<64xf32>
}
