// Retention (RetNet, Sun et al. 2023) with a learned decay per head:
//   g = sigmoid(decay);  W_t = g W_{t-1} + k_t (x) v_t;  y_t = read(W_t, q_t)
// No feature map (position encodings are applied outside the layer). The
// decay starts near 1 (sigmoid(3) = 0.95 for the first head up to
// sigmoid(7) = 0.999 for the last, spaced evenly over the heads), as
// RetNet's fixed per-head decays do: `fwp.param_init` says so, and the
// runtime honours it.
fwp.scan @retnet dims(d = 16)
    seq(%q : vector<16xf32>, %k : vector<16xf32>, %v : vector<16xf32>)
    params(%decay : f32)
    states(%W : !fwp.fast_weight<16x16xf32>)
    outputs(y : vector<16xf32>) attributes {fwp.param_init = {decay = "linspace:3.0:7.0"}} {
  %g = fwp.sigmoid %decay : f32
  %W_decayed = fwp.scale_weight %W, %g : !fwp.fast_weight<16x16xf32>
  %W_t = fwp.write_sum %W_decayed, %k, %v : !fwp.fast_weight<16x16xf32>, vector<16xf32>, vector<16xf32>
  %y = fwp.read %W_t, %q : !fwp.fast_weight<16x16xf32>, vector<16xf32> -> vector<16xf32>
  fwp.yield %W_t, %y : !fwp.fast_weight<16x16xf32>, vector<16xf32>
}
