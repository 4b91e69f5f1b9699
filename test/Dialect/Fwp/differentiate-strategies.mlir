// RUN: fwp-opt %s --fwp-differentiate --canonicalize --cse | FileCheck %s
// RUN: fwp-opt %s --fwp-differentiate | FileCheck %s --check-prefix=FWD

// The backward strategies (docs/design.md, "Backward strategies"): which
// tape the training forward records, and how the backward scan recovers the
// state at t-1.

// invert (the default for invertible writes): the tape records the written
// key and row, unless the backward can recompute them from the step's inputs
// (here both are seq inputs: no tape); the backward carries W and rebuilds
// W_{t-1} = W_t - k (x) v.
fwp.scan @sum_default seq(%k : vector<2xf32>, %v : vector<3xf32>) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}
// FWD-LABEL: fwp.scan @sum_default{{$}}
// FWD: attributes {fwp.backward = {W = "invert"}}
// CHECK-LABEL: fwp.scan @sum_default_train
// CHECK: outputs(y : vector<3xf32>) attributes
// CHECK-SAME: fwp.backward = {W = "invert"}
// CHECK-LABEL: fwp.scan @sum_default_grad reverse
// CHECK-NEXT: seq(%k: vector<2xf32>, %v: vector<3xf32>, %grad.y: vector<3xf32>)
// CHECK-NEXT: states(%W: !fwp.fast_weight<2x3xf32>, %grad.state.W: !fwp.fast_weight<2x3xf32>)
// CHECK: fwp.backward = {W = "invert"}
// CHECK: %[[NEG:.*]] = fwp.neg %v
// CHECK-NEXT: %[[PREV:.*]] = fwp.write_sum %W, %k, %[[NEG]]
// CHECK: fwp.yield %[[PREV]],

// store: the tape records W_{t-1} (a matrix per step); the backward reads
// it and recomputes the write; it carries no W.
fwp.scan @sum_store seq(%k : vector<2xf32>, %v : vector<3xf32>) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) attributes {fwp.backward = {W = "store"}} {
  %W1 = fwp.write_sum %W, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}
// CHECK-LABEL: fwp.scan @sum_store_train
// CHECK: outputs(y : vector<3xf32>, tape.W.prev : !fwp.fast_weight<2x3xf32>)
// CHECK: fwp.yield %{{.*}}, %{{.*}}, %W :
// CHECK-LABEL: fwp.scan @sum_store_grad reverse
// CHECK-NEXT: seq(%k: vector<2xf32>, %v: vector<3xf32>, %grad.y: vector<3xf32>, %tape.W.prev: !fwp.fast_weight<2x3xf32>)
// CHECK-NEXT: states(%grad.state.W: !fwp.fast_weight<2x3xf32>)
// CHECK: fwp.backward = {W = "store"}
// CHECK: fwp.write_sum %tape.W.prev, %k, %v

// A decay is not invertible: the default is checkpoint:64 (the runtime
// recomputes forward_train per segment of 64 steps). The weight is used
// only linearly, with the read an output, so the backward has the energy
// form: no W on the tape, forward_train records the read's W g (through the
// value before the write: read(W + k (x) v, q) = read(W, q) + v (k . q)),
// and the backward carries E = rowsum(adj(W) (.) W) instead of W.
fwp.scan @decay_default seq(%a : vector<2xf32>, %k : vector<2xf32>, %v : vector<3xf32>) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %Wd = fwp.scale_rows %W, %a : !fwp.fast_weight<2x3xf32>, vector<2xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}
// FWD-LABEL: fwp.scan @decay_default{{$}}
// FWD: attributes {fwp.backward = {W = "checkpoint:64"}}
// FWD: %[[WD:.*]] = fwp.scale_rows %W, %a
// FWD-NEXT: %[[W1:.*]] = fwp.write_sum %[[WD]], %k, %v
// FWD-NEXT: fwp.read %[[W1]], %k
// The training forward of a checkpointed layer runs only in the backward,
// to rebuild a segment's tape: it computes no outputs (here no y).
// CHECK-LABEL: fwp.scan @decay_default_train
// CHECK-NEXT: seq(%a: vector<2xf32>, %k: vector<2xf32>, %v: vector<3xf32>, %grad.y: vector<3xf32>)
// CHECK: outputs(tape.W.read.0 : vector<2xf32>)
// The read W g comes before the write (read after it, fwp-fuse would take
// it through the written value, W' g - k (v . g): a cancellation).
// CHECK: %[[WD:.*]] = fwp.scale_rows %W, %a
// CHECK-NEXT: %[[G:.*]] = fwp.read_transposed %[[WD]], %grad.y
// CHECK-NEXT: %[[W1:.*]] = fwp.write_sum %[[WD]], %k, %v
// CHECK-NOT: fwp.read %
// CHECK: fwp.yield %[[W1]], %[[G]] :
// CHECK-LABEL: fwp.scan @decay_default_grad reverse
// CHECK-NEXT: seq(%a: vector<2xf32>, %k: vector<2xf32>, %v: vector<3xf32>, %grad.y: vector<3xf32>, %tape.W.read.0: vector<2xf32>)
// CHECK-NEXT: states(%grad.state.W: !fwp.fast_weight<2x3xf32>, %energy.W: vector<2xf32>)
// CHECK: fwp.backward = {W = "checkpoint:64"}
// CHECK-NOT: fwp.row_dot
// E(W_t) = E_in; the write subtracts k (.) (G v), the read (of the value
// before the write) adds q (.) W g: E(W_{t-1}) = E(diag(a) W_{t-1}) = a (.) da.
// CHECK-DAG: %[[QDQ:.*]] = fwp.mul %k, %tape.W.read.0
// CHECK-DAG: %[[DK:.*]] = fwp.read_transposed %grad.state.W, %v
// CHECK-DAG: %[[DWD:.*]] = fwp.write_sum %grad.state.W, %k, %grad.y
// CHECK: %[[KDK:.*]] = fwp.mul %k, %[[DK]]
// CHECK-NEXT: %[[E1:.*]] = fwp.sub %energy.W, %[[KDK]]
// CHECK-NEXT: %[[E:.*]] = fwp.add %[[QDQ]], %[[E1]]
// CHECK-NEXT: %[[DW:.*]] = fwp.scale_rows %[[DWD]], %a
// CHECK-NEXT: %[[DA:.*]] = fwp.div %[[E]], %a
// CHECK-NEXT: fwp.yield %[[DW]], %[[E]], %[[DA]],

// A decay by a sigmoid: its gradient goes to the logits as E (1 - a),
// without the quotient E / a (0 / 0 where a underflows).
fwp.scan @decay_sigmoid seq(%g : vector<2xf32>, %k : vector<2xf32>, %v : vector<3xf32>) states(%W : !fwp.fast_weight<2x3xf32>) outputs(y : vector<3xf32>) {
  %a = fwp.sigmoid %g : vector<2xf32>
  %Wd = fwp.scale_rows %W, %a : !fwp.fast_weight<2x3xf32>, vector<2xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x3xf32>, vector<3xf32>
}
// CHECK-LABEL: fwp.scan @decay_sigmoid_grad reverse
// CHECK: %[[A:.*]] = fwp.sigmoid %g
// CHECK-NOT: fwp.div
// CHECK: %[[ONE:.*]] = fwp.constant 1.0{{.*}} : vector<2xf32>
// CHECK-NEXT: %[[C:.*]] = fwp.sub %[[ONE]], %[[A]]
// CHECK-NEXT: %[[DG:.*]] = fwp.mul %{{.*}}, %[[C]]
// CHECK-NEXT: fwp.yield %{{.*}}, %{{.*}}, %[[DG]],

// checkpoint with an explicit segment length; a vector state next to a
// checkpointed one is checkpointed too.
fwp.scan @checkpoint_mixed seq(%a : vector<2xf32>, %k : vector<2xf32>, %v : vector<3xf32>) states(%W : !fwp.fast_weight<2x3xf32>, %h : vector<3xf32>) outputs(y : vector<3xf32>) attributes {fwp.backward = {W = "checkpoint:16"}} {
  %Wd = fwp.scale_rows %W, %a : !fwp.fast_weight<2x3xf32>, vector<2xf32>
  %W1 = fwp.write_sum %Wd, %k, %v : !fwp.fast_weight<2x3xf32>, vector<2xf32>, vector<3xf32>
  %r = fwp.read %W1, %k : !fwp.fast_weight<2x3xf32>, vector<2xf32> -> vector<3xf32>
  %h1 = fwp.add %h, %r : vector<3xf32>
  fwp.yield %W1, %h1, %h1 : !fwp.fast_weight<2x3xf32>, vector<3xf32>, vector<3xf32>
}
// FWD-LABEL: fwp.scan @checkpoint_mixed{{$}}
// FWD: attributes {fwp.backward = {W = "checkpoint:16", h = "checkpoint:16"}}
// The read feeds a state: its gradient depends on the backward's states,
// so the weight keeps the tape form (W_{t-1} recorded, da = row_dot).
// CHECK-LABEL: fwp.scan @checkpoint_mixed_train
// CHECK: outputs(tape.W.prev : !fwp.fast_weight<2x3xf32>, tape.h.prev : vector<3xf32>)
// CHECK-LABEL: fwp.scan @checkpoint_mixed_grad reverse
// CHECK-NOT: energy
// CHECK: fwp.row_dot %{{.*}}, %tape.W.prev

// The tape records only what the backward cannot recompute from the step's
// inputs: a key made from a seq input by a feature map is recomputed in the
// backward (and the inverse write uses it), the delta depends on the state
// and stays on the tape.
fwp.scan @computed_key seq(%k : vector<2xf32>, %v : vector<2xf32>, %b : f32) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %e = fwp.elu_plus_one %k : vector<2xf32>
  %phi = fwp.sum_norm %e : vector<2xf32>
  %W1, %r = fwp.write_delta %W, %phi, %v, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %phi : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}
// CHECK-LABEL: fwp.scan @computed_key_train
// CHECK: outputs(y : vector<2xf32>, tape.W.0.delta : vector<2xf32>) attributes
// CHECK-LABEL: fwp.scan @computed_key_grad reverse
// CHECK-NEXT: seq(%k: vector<2xf32>, %v: vector<2xf32>, %b: f32, %grad.y: vector<2xf32>, %tape.W.0.delta: vector<2xf32>)
// CHECK: %[[E:.*]] = fwp.elu_plus_one %k
// CHECK-NEXT: %[[PHI:.*]] = fwp.sum_norm %[[E]]
// CHECK-NEXT: %[[U:.*]] = fwp.scale %tape.W.0.delta, %b
// CHECK-NEXT: %[[NEG:.*]] = fwp.neg %[[U]]
// CHECK-NEXT: %[[PREV:.*]] = fwp.write_sum %W, %[[PHI]], %[[NEG]]
// CHECK-NOT: fwp.sum_norm %
// CHECK: fwp.yield %[[PREV]],

// A key that depends on a state (here the vector state h) is recorded.
fwp.scan @state_key seq(%v : vector<2xf32>, %b : f32) states(%W : !fwp.fast_weight<2x2xf32>, %h : vector<2xf32>) outputs(y : vector<2xf32>) {
  %key = fwp.tanh %h : vector<2xf32>
  %W1, %r = fwp.write_delta %W, %key, %v, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %key : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
}
// CHECK-LABEL: fwp.scan @state_key_train
// CHECK: outputs(y : vector<2xf32>, tape.W.0.key : vector<2xf32>, tape.W.0.delta : vector<2xf32>, tape.h.prev : vector<2xf32>) attributes
// CHECK-LABEL: fwp.scan @state_key_grad reverse
// CHECK: %[[U:.*]] = fwp.scale %tape.W.0.delta, %b
// CHECK-NEXT: %[[NEG:.*]] = fwp.neg %[[U]]
// CHECK-NEXT: %[[PREV:.*]] = fwp.write_sum %W, %tape.W.0.key, %[[NEG]]

// A scan that runs backwards in time has a backward that runs forwards; a
// matrix it cannot invert is stored by default (checkpoints run forwards).
fwp.scan @reverse_decay reverse seq(%a : vector<2xf32>, %k : vector<2xf32>, %v : vector<2xf32>) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %W1 = fwp.scale_rows %W, %a : !fwp.fast_weight<2x2xf32>, vector<2xf32>
  %W2 = fwp.write_sum %W1, %k, %v : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W2, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W2, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}
// FWD-LABEL: fwp.scan @reverse_decay reverse{{$}}
// FWD: attributes {fwp.backward = {W = "store"}}
// FWD-LABEL: fwp.scan @reverse_decay_grad{{$}}
// FWD-NEXT: seq(%a: vector<2xf32>, %k: vector<2xf32>, %v: vector<2xf32>, %grad.y: vector<2xf32>, %tape.W.prev: !fwp.fast_weight<2x2xf32>)
// FWD: fwp.role = "backward"

// A delta write under a decay the same for every row (gated_delta_net's
// form): the energy form too. The training forward records the read's W g
// and the write's retrieval; the backward, without W, hands the product of
// W with the retrieval's adjoint d over (deferred.W.0) and adds only the
// sum vbar . d of its energy term (spread over the rows); the scan after it
// (@..._deferred) rebuilds W forwards and yields W d's gradient of the key.
// (fwp.scale_weight %W, %a after fwp-decompose:)
fwp.scan @delta_decay seq(%a : f32, %k : vector<2xf32>, %v : vector<2xf32>, %b : f32) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %ones = fwp.constant 1.0 : vector<2xf32>
  %f = fwp.scale %ones, %a : vector<2xf32>
  %Wd = fwp.scale_rows %W, %f : !fwp.fast_weight<2x2xf32>, vector<2xf32>
  %W1, %r = fwp.write_delta %Wd, %k, %v, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}
// CHECK-LABEL: fwp.scan @delta_decay_train
// CHECK: outputs(tape.W.read.0 : vector<2xf32>, tape.W.0.retrieved : vector<2xf32>)
// CHECK: %[[WD:.*]] = fwp.scale_rows %W
// CHECK-NEXT: %[[G:.*]] = fwp.read_transposed %[[WD]], %grad.y
// CHECK-NEXT: %[[W1:.*]], %[[R:.*]] = fwp.write_delta %[[WD]], %k, %v, %b
// CHECK-NEXT: fwp.yield %[[W1]], %[[G]], %[[R]] :
// CHECK-LABEL: fwp.scan @delta_decay_grad reverse
// CHECK-NEXT: seq(%a: f32, %k: vector<2xf32>, %v: vector<2xf32>, %b: f32, %grad.y: vector<2xf32>, %tape.W.read.0: vector<2xf32>, %tape.W.0.retrieved: vector<2xf32>)
// CHECK-NEXT: states(%grad.state.W: !fwp.fast_weight<2x2xf32>, %energy.W: vector<2xf32>)
// CHECK-NEXT: outputs(grad.a : f32, grad.k : vector<2xf32>, grad.v : vector<2xf32>, grad.b : f32, deferred.W.0 : vector<2xf32>)
// CHECK-NOT: fwp.row_dot
// CHECK: fwp.write_delta %grad.state.W, %k,
// CHECK: %[[D:.*]] = fwp.sub %{{.*}}, %{{.*}} : vector<2xf32>
// CHECK: %[[SHARE:.*]] = fwp.constant 5.0{{.*}} : vector<2xf32>
// CHECK-NEXT: %[[UD:.*]] = fwp.dot %tape.W.0.retrieved, %[[D]]
// CHECK-NEXT: fwp.scale %[[SHARE]], %[[UD]]
// CHECK: fwp.yield {{.*}}, %[[D]] :
// CHECK-LABEL: fwp.scan @delta_decay_deferred{{$}}
// CHECK-NEXT: seq(%a: f32, %k: vector<2xf32>, %v: vector<2xf32>, %b: f32, %deferred.W.0: vector<2xf32>)
// CHECK-NEXT: states(%W: !fwp.fast_weight<2x2xf32>)
// CHECK-NEXT: outputs(grad.k : vector<2xf32>) attributes {{.*}}fwp.role = "backward_deferred"
// CHECK: %[[WD:.*]] = fwp.scale_rows %W
// CHECK-NEXT: %[[W1:.*]], %{{.*}} = fwp.write_delta %[[WD]], %k, %v, %b
// CHECK-NEXT: %[[RD:.*]] = fwp.read_transposed %[[WD]], %deferred.W.0
// CHECK-NEXT: fwp.yield %[[W1]], %[[RD]] :

// Decays that differ by row: the energy term of W d is needed row by row,
// so a delta write keeps the tape form.
fwp.scan @delta_row_decay seq(%a : vector<2xf32>, %k : vector<2xf32>, %v : vector<2xf32>, %b : f32) states(%W : !fwp.fast_weight<2x2xf32>) outputs(y : vector<2xf32>) {
  %Wd = fwp.scale_rows %W, %a : !fwp.fast_weight<2x2xf32>, vector<2xf32>
  %W1, %r = fwp.write_delta %Wd, %k, %v, %b : !fwp.fast_weight<2x2xf32>, vector<2xf32>, vector<2xf32>
  %y = fwp.read %W1, %k : !fwp.fast_weight<2x2xf32>, vector<2xf32> -> vector<2xf32>
  fwp.yield %W1, %y : !fwp.fast_weight<2x2xf32>, vector<2xf32>
}
// CHECK-LABEL: fwp.scan @delta_row_decay_train
// CHECK: outputs(tape.W.prev : !fwp.fast_weight<2x2xf32>)
// CHECK-LABEL: fwp.scan @delta_row_decay_grad reverse
// CHECK-NOT: energy
// CHECK: fwp.row_dot %{{.*}}, %tape.W.prev
// CHECK-NOT: fwp.scan @delta_row_decay_deferred
