#!/usr/bin/env python3
"""The GPU benchmark, in one process (docs/gpu.md, docs/benchmarks.md).

    python3 bench/gpu_bench.py --ops LIB --artifacts DIR [--out FILE]
                               [--repeats N] [--quick] [--budget-s S] [--no-fla]

Times forward + backward (CUDA events, warm-up, median of --repeats) of
  * fwp's compiled delta_net (DIR/delta_net_d<d>.fwpk, f32) against fla's
    fused_recurrent (f32) and chunk (bf16) delta rule at (B,H,T,d) =
    (96,8,256,16), (32,8,512,32), (8,16,2048,64), (8,16,4096,128);
  * fwp's compiled delta_rnn, delta_lstm, rdn (DIR/<model>_d<d>.fwpk) against
    the eager LibTorch reference layers at the first two shapes,
on identical inputs, and compares outputs and input gradients (max abs diff).

Same function for fla: MODELS.md's delta_net is
  W_t = W + phi(k) (x) beta (v - W^T phi(k)),  y_t = W_t^T phi(q),
  phi = sumnorm(elu + 1), beta = sigmoid(beta_raw);
fla's delta rule is S_t = S + k (x) b (v - S^T k), o_t = scale * S_t^T q. So fla
gets the mapped q, k (phi applied in PyTorch), beta = sigmoid(beta_raw),
scale = 1, use_qk_l2norm_in_kernel = False, layout [B, T, H, d]; its timing is
the fla kernel alone (phi and sigmoid outside it), fwp's includes them. The
gradients are compared w.r.t. the raw inputs (through phi in PyTorch).

--ops is libfwp_bench_ops.so (bench/gpu_ops.cpp; a -DCMAKE_POSITION_INDEPENDENT_CODE=ON
runtime build makes it). A failing case is recorded with its error and
skipped; the JSON is rewritten after every case, so a killed run keeps what
it measured. --budget-s skips the cases that would start after that many
seconds. Exit status: 0 when every case ran, 1 when some failed or were
skipped, 2 on bad usage or no GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from typing import Any, Callable

import torch
import torch.nn.functional as F

# (B, H, T, d) and the published fwd+bwd times on an H100 (ms): fla's best
# of its two kernels, and the paper's own CUDA kernel (None: it refuses).
SHAPES: list[tuple[int, int, int, int]] = [
    (96, 8, 256, 16), (32, 8, 512, 32), (8, 16, 2048, 64), (8, 16, 4096, 128)]
H100_FLA_MS = [1.008, 1.72, 2.405, 4.80]
H100_PAPER_MS: list[float | None] = [3.14, 5.08, 30.0, None]
RECURRENT = ["delta_rnn", "delta_lstm", "rdn"]


def median_ms(repeats: int, warmup: int, fn: Callable[[], Any]) -> float:
    """Median of `repeats` CUDA-event timings of fn() after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def phi(x: torch.Tensor) -> torch.Tensor:
    """sumnorm(elu(x) + 1) over the last dim (MODELS.md)."""
    e = F.elu(x) + 1.0
    return e / e.sum(-1, keepdim=True)


class Ops:
    """fwp's layers through libfwp_bench_ops.so (bench/gpu_ops.cpp)."""

    def __init__(self, path: str) -> None:
        torch.ops.load_library(path)
        self.ops = torch.ops.fwp_bench

    def load(self, path: str) -> int:
        return int(self.ops.load(path))

    def reference(self, layer: str, d: int) -> int:
        return int(self.ops.reference(layer, d))

    def signature(self, handle: int) -> dict[str, Any]:
        return json.loads(self.ops.signature(handle))

    def forward_backward(self, handle: int, inputs: dict[str, torch.Tensor],
                         grad_y: torch.Tensor) -> dict[str, torch.Tensor]:
        names = list(inputs)
        out = self.ops.forward_backward(handle, ",".join(names), list(inputs.values()), grad_y)
        result = {"y": out[0]}
        result.update({"grad." + n: g for n, g in zip(names, out[1:])})
        return result


def make_inputs(sig: dict[str, Any], B: int, H: int, T: int,
                seed: int) -> dict[str, torch.Tensor]:
    """Seq inputs [B,H,T,n] (randn) and params [H,...] (0.1 randn), seeded."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    inputs: dict[str, torch.Tensor] = {}
    for spec in sig["seq"]:
        inputs[spec["name"]] = torch.randn([B, H, T] + spec["shape"], device="cuda", generator=gen)
    for spec in sig["params"]:
        inputs[spec["name"]] = 0.1 * torch.randn([H] + spec["shape"], device="cuda", generator=gen)
    return inputs


def fla_delta_rule(kind: str, inputs: dict[str, torch.Tensor]
                   ) -> tuple[Callable[[torch.Tensor], Any], Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """(timed, checked): `timed(grad_o)` runs fla forward + backward on the
    pre-mapped inputs; `checked(grad_y)` runs phi + fla end to end from the raw
    inputs and returns y [B,H,T,d] and the raw inputs' gradients."""
    from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
    dtype = torch.bfloat16 if kind == "chunk" else torch.float32
    fn = chunk_delta_rule if kind == "chunk" else fused_recurrent_delta_rule

    def mapped(raw: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        q = phi(raw["q"]).transpose(1, 2)              # [B,T,H,d]
        k = phi(raw["k"]).transpose(1, 2)
        v = raw["v"].transpose(1, 2)
        beta = torch.sigmoid(raw["beta"][..., 0]).transpose(1, 2)  # [B,T,H]
        return [t.to(dtype).contiguous() for t in (q, k, v, beta)]

    with torch.no_grad():
        leaves = [t.detach().requires_grad_(True) for t in mapped(inputs)]

    def timed(grad_o: torch.Tensor) -> Any:
        for leaf in leaves:
            leaf.grad = None
        o, _ = fn(leaves[0], leaves[1], leaves[2], leaves[3], scale=1.0,
                  output_final_state=False)
        o.backward(grad_o)
        return o

    def checked(grad_y: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = {n: t.detach().requires_grad_(True) for n, t in inputs.items()}
        q, k, v, beta = mapped(raw)
        o, _ = fn(q, k, v, beta, scale=1.0, output_final_state=False)
        y = o.transpose(1, 2).float()
        y.backward(grad_y)
        out = {"y": y.detach()}
        out.update({"grad." + n: t.grad for n, t in raw.items()})
        return out

    return timed, checked


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ops = Ops(args.ops)
        self.start = time.monotonic()
        self.cases: list[dict[str, Any]] = []
        self.failed = 0
        self.skipped = 0
        props = torch.cuda.get_device_properties(0)
        self.header: dict[str, Any] = {
            "benchmark": "gpu_bench",
            "device": props.name,
            "sm": f"sm_{props.major}{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "host": platform.node(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "timing": "CUDA events around forward+backward, median",
            "tolerance_note": "max_abs_diff_* are reported, not asserted (fla chunk computes in bf16)",
        }
        try:
            import fla
            self.header["fla"] = getattr(fla, "__version__", "?")
        except Exception as error:  # recorded, the fwp cases still run
            self.header["fla"] = f"unavailable: {error}"

    def out_of_time(self) -> bool:
        return self.args.budget_s > 0 and time.monotonic() - self.start > self.args.budget_s

    def write(self) -> None:
        report = dict(self.header)
        report["elapsed_s"] = round(time.monotonic() - self.start, 1)
        report["cases"] = self.cases
        report["failed"] = self.failed
        report["skipped"] = self.skipped
        text = json.dumps(report, indent=2)
        if self.args.out:
            tmp = self.args.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, self.args.out)

    def part(self, case: dict[str, Any], name: str, fn: Callable[[], None]) -> None:
        """Runs one part of a case; a failure is recorded and the rest go on."""
        if self.out_of_time():
            case.setdefault("skipped", []).append(name)
            self.skipped += 1
            return
        try:
            fn()
        except Exception as error:
            self.failed += 1
            case.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            try:  # a sticky CUDA error fails here too; the next parts record it
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            except Exception:
                pass

    def fwp_case(self, case: dict[str, Any], artifact: str, shape: tuple[int, int, int, int]
                 ) -> tuple[int, dict[str, torch.Tensor], torch.Tensor] | None:
        path = os.path.join(self.args.artifacts, artifact)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such artifact (scripts/gpu_bundle.sh makes it)")
        handle = self.ops.load(path)
        B, H, T, d = shape
        inputs = make_inputs(self.ops.signature(handle), B, H, T, seed=1234)
        grad_y = torch.randn(B, H, T, d, device="cuda",
                             generator=torch.Generator(device="cuda").manual_seed(99))
        return handle, inputs, grad_y

    def delta_net(self, index: int) -> None:
        B, H, T, d = shape = SHAPES[index]
        case: dict[str, Any] = {"model": "delta_net", "B": B, "H": H, "T": T, "d": d,
                                "h100_fla_best_ms": H100_FLA_MS[index],
                                "h100_paper_kernel_ms": H100_PAPER_MS[index]}
        self.cases.append(case)
        state: dict[str, Any] = {}
        print(f"[gpu_bench] delta_net B={B} H={H} T={T} d={d}", flush=True)

        def fwp() -> None:
            handle, inputs, grad_y = self.fwp_case(case, f"delta_net_d{d}.fwpk", shape)
            state.update(handle=handle, inputs=inputs, grad_y=grad_y)
            state["fwp"] = self.ops.forward_backward(handle, inputs, grad_y)
            case["fwp_f32_ms"] = median_ms(self.args.repeats, self.args.warmup,
                                           lambda: self.ops.forward_backward(handle, inputs, grad_y))
        self.part(case, "fwp", fwp)
        if self.args.no_fla or "inputs" not in state:
            self.write()
            return
        for kind, label in (("fused_recurrent", "fla_fused_recurrent_f32"),
                            ("chunk", "fla_chunk_bf16")):
            def fla() -> None:
                timed, checked = fla_delta_rule(kind, state["inputs"])
                grad_o = state["grad_y"].transpose(1, 2).contiguous()
                if kind == "chunk":
                    grad_o = grad_o.bfloat16()
                case[f"{label}_ms"] = median_ms(self.args.repeats, self.args.warmup,
                                                lambda: timed(grad_o))
                if "fwp" in state:
                    got = checked(state["grad_y"])
                    case[f"max_abs_diff_y_vs_{label}"] = max_abs(state["fwp"]["y"], got["y"])
                    case[f"max_abs_diff_grad_vs_{label}"] = max(
                        max_abs(state["fwp"][n], got[n]) for n in got if n.startswith("grad."))
                    case[f"max_abs_y_{label}"] = got["y"].abs().max().item()
                    if "fwp_f32_ms" in case:
                        case[f"ratio_{label}_over_fwp"] = case[f"{label}_ms"] / case["fwp_f32_ms"]
            self.part(case, label, fla)
        fla_times = [case[k] for k in ("fla_fused_recurrent_f32_ms", "fla_chunk_bf16_ms") if k in case]
        if fla_times and "fwp_f32_ms" in case:
            case["ratio_best_fla_over_fwp"] = min(fla_times) / case["fwp_f32_ms"]
        self.write()

    def recurrent(self, model: str, index: int) -> None:
        B, H, T, d = shape = SHAPES[index]
        case: dict[str, Any] = {"model": model, "B": B, "H": H, "T": T, "d": d}
        self.cases.append(case)
        state: dict[str, Any] = {}
        print(f"[gpu_bench] {model} B={B} H={H} T={T} d={d}", flush=True)

        def fwp() -> None:
            handle, inputs, grad_y = self.fwp_case(case, f"{model}_d{d}.fwpk", shape)
            state.update(inputs=inputs, grad_y=grad_y)
            state["fwp"] = self.ops.forward_backward(handle, inputs, grad_y)
            case["fwp_f32_ms"] = median_ms(self.args.repeats, self.args.warmup,
                                           lambda: self.ops.forward_backward(handle, inputs, grad_y))
        self.part(case, "fwp", fwp)

        def eager() -> None:
            if "inputs" not in state:
                raise RuntimeError("no inputs: the fwp part failed")
            handle = self.ops.reference(model, d)
            inputs, grad_y = state["inputs"], state["grad_y"]
            want = self.ops.forward_backward(handle, inputs, grad_y)
            case["eager_reference_f32_ms"] = median_ms(
                self.args.reference_repeats, 1,
                lambda: self.ops.forward_backward(handle, inputs, grad_y))
            if "fwp" in state:
                case["max_abs_diff_y_vs_eager"] = max_abs(state["fwp"]["y"], want["y"])
                case["max_abs_diff_grad_vs_eager"] = max(
                    max_abs(state["fwp"][n], want[n]) for n in want if n.startswith("grad."))
            if "fwp_f32_ms" in case:
                case["ratio_eager_over_fwp"] = case["eager_reference_f32_ms"] / case["fwp_f32_ms"]
        self.part(case, "eager_reference", eager)
        self.write()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", required=True, help="libfwp_bench_ops.so (bench/gpu_ops.cpp)")
    parser.add_argument("--artifacts", required=True,
                        help="folder with delta_net_d{16,32,64,128}.fwpk and <model>_d{16,32}.fwpk")
    parser.add_argument("--out", help="JSON results (rewritten after every case)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per kernel (median)")
    parser.add_argument("--reference-repeats", type=int, default=10,
                        help="timed runs of the eager reference layers (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (JIT, autotune)")
    parser.add_argument("--quick", action="store_true",
                        help="delta_net at the first two shapes, the recurrent layers at the first")
    parser.add_argument("--budget-s", type=float, default=0,
                        help="skip what would start after this many seconds (0: no limit)")
    parser.add_argument("--no-fla", action="store_true", help="fwp and the eager reference only")
    args = parser.parse_args()
    if args.repeats < 10:
        print("gpu_bench: note: fewer than 10 repeats", file=sys.stderr)
    if not torch.cuda.is_available():
        print("gpu_bench: error: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    if not os.path.exists(args.ops):
        print(f"gpu_bench: error: {args.ops}: no such file (build fwp_bench_ops)", file=sys.stderr)
        return 2
    bench = Bench(args)
    bench.write()
    net_shapes = [0, 1] if args.quick else [0, 1, 2, 3]
    rec_shapes = [0] if args.quick else [0, 1]
    for index in net_shapes:
        bench.delta_net(index)
    for index in rec_shapes:
        for model in RECURRENT:
            bench.recurrent(model, index)
    bench.write()
    print(json.dumps({"cases": len(bench.cases), "failed": bench.failed,
                      "skipped": bench.skipped}), flush=True)
    return 0 if bench.failed == 0 and bench.skipped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
