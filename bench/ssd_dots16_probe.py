"""Which 16-bit dot operands of seqpipe's SSD crash compiled on an H100/H200 (issue #16), and what the rest cost.

    PYTHONPATH=/tmp/site python bench/ssd_dots16_probe.py [--budget 85] [--only NAME ...]

Each variant runs in its own process (an illegal memory access kills the CUDA context): forward+backward of
``ssd_scan(backend="triton")`` on bf16 inputs, d_inner 2048 (32 heads x 64), N 16, one group, with D, z, dt bias
and softplus, at B4 L8k and then B1 L64k. A variant prints, per shape, OK with the median fwd+bwd ms
(``triton.testing.do_bench``) and the worst relative error of y and the input gradients against the same inputs
in float32 (tf32 products), or CRASH with the error's last line. First every variant compiles its kernels at B1
L1k, all at once (the disk cache then serves the timed runs). Variants set ``ssd_triton`` flags:

    fp32-operands   DOTS_16BIT off (bf16 inputs, fp32 operands read as tf32: main's kernels)
    16bit-all       DOTS_16BIT and NARROW_DOTS_16BIT on (commit 9080d4b: every product 16-bit)
    16bit-all-split     the same as two gradient launches (SPLIT_GRAD)
    16bit-all-p64       the same with channel blocks of 64 (GRAD_BLOCK_P)
    16bit-all-blocking  the same with CUDA_LAUNCH_BLOCKING=1 (names the failing kernel)
    16bit-all-4warps    the same at 4 warps a program (NUM_WARPS): no warpgroup split of N
    16bit           DOTS_16BIT on, NARROW_DOTS_16BIT off (the products with an N-wide right operand stay fp32)
    16bit-split     the same as two gradient launches

The cause to confirm (bench/RESULTS.md, issue #16 session 8): 16bit-all* crash except 4warps; 16bit* do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "fp32-operands": ({"DOTS_16BIT": False}, {}),
    "16bit-all": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": True}, {}),
    "16bit-all-split": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": True, "SPLIT_GRAD": True}, {}),
    "16bit-all-p64": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": True, "GRAD_BLOCK_P": 64}, {}),
    "16bit-all-blocking": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": True}, {"CUDA_LAUNCH_BLOCKING": "1"}),
    "16bit-all-4warps": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": True, "NUM_WARPS": 4}, {}),
    "16bit": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": False}, {}),
    "16bit-split": ({"DOTS_16BIT": True, "NARROW_DOTS_16BIT": False, "SPLIT_GRAD": True}, {}),
}
HEADS, HEAD_DIM, D_STATE = 32, 64, 16
TIMED_SHAPES = [(4, 8192), (1, 65536)]
DEVICE = "cuda"
WARM_SHAPE = (1, 1024)


def inputs(batch: int, length: int, dtype, seed: int = 0) -> dict:
    import torch

    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=DEVICE) * scale).to(dtype).requires_grad_()

    return {"x": rand(batch, length, HEADS, HEAD_DIM), "dt": rand(batch, length, HEADS, scale=0.5),
            "A": (-torch.rand(HEADS, generator=gen, device=DEVICE) * 15 - 1).requires_grad_(),
            "B": rand(batch, length, 1, D_STATE), "C": rand(batch, length, 1, D_STATE),
            "D": torch.ones(HEADS, device=DEVICE, requires_grad=True), "z": rand(batch, length, HEADS, HEAD_DIM),
            "dt_bias": rand(HEADS, scale=0.5)}


def child(flags: dict, shapes: list, timed: bool) -> None:
    """Run one variant; print one JSON line per shape as soon as it is done."""
    import torch
    import triton.testing

    from seqpipe.kernels import ssd_scan, ssd_triton

    for name, value in flags.items():
        if not hasattr(ssd_triton, name):
            raise SystemExit(f"the installed seqpipe ({ssd_triton.__file__}) has no ssd_triton.{name}: install "
                             f"branch kbf16 (or later) into PYTHONPATH")
    defaults = {name: getattr(ssd_triton, name) for name in flags}

    def fwd_bwd(leaves: dict, weights):
        y = ssd_scan(**leaves, dt_softplus=True, chunk_size=64, backend="triton")
        grads = torch.autograd.grad((y * weights).sum(), [leaves[k] for k in sorted(leaves)])
        return [y, *grads]

    for batch, length in shapes:
        bf16 = inputs(batch, length, torch.bfloat16)
        weights = torch.randn(batch, length, HEADS, HEAD_DIM, device=DEVICE, dtype=torch.bfloat16)
        for name, value in defaults.items():  # the float32 reference with the module's own settings
            setattr(ssd_triton, name, value)
        fp32 = {k: v.detach().float().requires_grad_() for k, v in bf16.items()}
        expected = fwd_bwd(fp32, weights.float())
        for name, value in flags.items():
            setattr(ssd_triton, name, value)
        actual = fwd_bwd(bf16, weights)
        torch.cuda.synchronize() if DEVICE == "cuda" else None
        error = max(((a.float() - e).norm() / e.norm()).item() for a, e in zip(actual, expected))
        ms = triton.testing.do_bench(lambda: fwd_bwd(bf16, weights), warmup=10, rep=40) if timed else float("nan")
        print(json.dumps({"shape": f"B{batch} L{length // 1024}k", "ms": ms, "error": error}), flush=True)


def run_variant(name: str, shapes: list, timed: bool) -> subprocess.Popen:
    flags, env = VARIANTS[name]
    return subprocess.Popen([sys.executable, __file__, "--child", json.dumps([flags, shapes, timed])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def report(name: str, process: subprocess.Popen, timeout: float, shapes: list) -> None:
    try:
        out, err = process.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        err += "\nTIMEOUT"
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for row in done:
        verdict = "OK" if row["error"] < 5e-2 else "WRONG"
        print(f"{name:<20} {row['shape']:<9} {verdict:<6} {row['ms']:>8.2f} ms  err {row['error']:.1e}", flush=True)
    if len(done) < len(shapes):
        lines = [line for line in err.strip().splitlines() if line.strip()]
        kernel = next((line.strip() for line in reversed(lines) if "_kernel[" in line), "")
        shape = "B{} L{}k".format(shapes[len(done)][0], shapes[len(done)][1] // 1024)
        print(f"{name:<20} {shape:<9} CRASH  rc {process.returncode}: {lines[-1][:160] if lines else ''}"
              + (f" [{kernel[:120]}]" if kernel else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--budget", type=float, default=85.0, help="seconds for the whole probe")
    args = parser.parse_args()
    if args.child:
        flags, shapes, timed = json.loads(args.child)
        child(flags, shapes, timed)
        return
    start = time.time()
    names = args.only or list(VARIANTS)
    warm = {name: run_variant(name, [WARM_SHAPE], False) for name in names}
    for process in warm.values():
        try:
            process.communicate(timeout=max(1, args.budget / 2 - (time.time() - start)))
        except subprocess.TimeoutExpired:
            process.kill()
    print(f"compiled {len(names)} variants at B{WARM_SHAPE[0]} L{WARM_SHAPE[1] // 1024}k in "
          f"{time.time() - start:.0f} s (crashes there show again below)", flush=True)
    for name in names:
        left = args.budget - (time.time() - start)
        if left < 5:
            print(f"{name:<20} skipped: out of budget", flush=True)
            continue
        report(name, run_variant(name, TIMED_SHAPES, True), left, TIMED_SHAPES)
    print(f"total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
