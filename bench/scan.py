"""Benchmark the selective scan backends: time, peak memory and error, side by side in one run.

    python bench/scan.py [--lengths 1024 4096 16384 65536] [--device cpu] [--repeats 3]

Shape: batch 1, d_inner 256 (--d-inner), N 16, fp32, with D, z, delta_bias and softplus (Mamba's call). Modes:
"fwd" runs under torch.no_grad(); "fwd+bwd" backpropagates y.sum() to every input. Each (backend, L,
mode) runs in its own subprocess so memory readings do not mix: on CPU, "peak MiB" is the growth of the
process's peak resident set (ru_maxrss) during the runs, above the inputs and the imports: what the OS
had to give, allocator caching included (it also counts the first-call workspaces of torch's own ops). On CUDA it is torch.cuda.max_memory_allocated above the inputs.
Times are medians over --repeats (after one warm-up run at L <= 4096 and on CUDA).

On CUDA the last column compares each time with the memory floor: the bytes the scan must move at the
least (forward: read u, delta, z, B, C and write y; backward: read them and dy again, write du, ddelta,
dz, dB, dC), divided by the bandwidth of a measured device-to-device copy (bytes read plus written).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from scan_pscan import selective_scan_pscan  # noqa: E402

from seqpipe.kernels import selective_scan  # noqa: E402

D_STATE = 16
DIM = 256  # d_inner; --d-inner sets it in the main process and in every worker


def make_inputs(length: int, device: str, dtype=torch.float32, requires_grad=False, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device, dtype).requires_grad_(requires_grad)

    A = -(torch.rand(DIM, D_STATE, generator=gen) * D_STATE + 0.5)
    return {"u": rand(1, DIM, length), "delta": rand(1, DIM, length, scale=0.5),
            "A": A.to(device, dtype).requires_grad_(requires_grad), "B": rand(1, D_STATE, length),
            "C": rand(1, D_STATE, length), "D": rand(DIM), "z": rand(1, DIM, length),
            "delta_bias": rand(DIM, scale=0.5)}


def run_backend(backend: str, inputs: dict) -> torch.Tensor:
    if backend == "pscan":
        return selective_scan_pscan(**inputs, delta_softplus=True)
    return selective_scan(**inputs, delta_softplus=True, backend=backend)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def worker(backend: str, length: int, mode: str, device: str, repeats: int) -> dict:
    """Time one configuration in this process; returns median seconds and peak extra memory in MiB."""
    backward = mode == "fwd+bwd"
    inputs = make_inputs(length, device, requires_grad=backward)

    def once() -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            y = run_backend(backend, inputs)
            if backward:
                y.sum().backward()
        _sync(device)
        for value in inputs.values():
            value.grad = None
        return time.perf_counter() - start

    # the baseline is taken before the warm-up, which would otherwise hide the peak
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda" or length <= 4096:
        once()
    times = [once() for _ in range(repeats)]
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # ru_maxrss is in KiB on Linux
    return {"seconds": statistics.median(times), "peak_mib": peak}


def errors(length: int, device: str, backends: list[str]) -> dict:
    """Max relative error (max |x - ref| / max |ref|) of y and of every gradient, fp32 vs the float64 reference."""
    exact = make_inputs(length, "cpu", torch.float64, requires_grad=True)
    y_exact = run_backend("ref", exact)
    weights = torch.randn(y_exact.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (y_exact * weights).sum().backward()
    report = {}
    for backend in backends:
        inputs = make_inputs(length, device, requires_grad=True)
        y = run_backend(backend, inputs)
        (y * weights.to(device, y.dtype)).sum().backward()
        pairs = [("y", y, y_exact)] + [(f"d{k}", inputs[k].grad, exact[k].grad) for k in exact]
        report[backend] = {name: ((a.double().cpu() - b).abs().max() / b.abs().max()).item() for name, a, b in pairs}
    return report


def copy_bandwidth(size_bytes: int = 2**30, repeats: int = 10) -> float:
    """Bytes per second (read plus written) of a device-to-device copy on CUDA, median of ``repeats``."""
    source = torch.empty(size_bytes // 4, device="cuda")
    target = torch.empty_like(source)
    times = []
    for _ in range(repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * size_bytes / statistics.median(times[1:])


def floor_seconds(length: int, mode: str, bandwidth: float) -> float:
    """Least bytes the scan must move, fp32 (see the module docstring), over ``bandwidth``."""
    dl, nl = DIM * length, D_STATE * length
    elements = 4 * dl + 2 * nl if mode == "fwd" else 11 * dl + 6 * nl
    return 4 * elements / bandwidth


def measure(args, backend: str, length: int, mode: str) -> dict | None:
    """Run one configuration in a fresh interpreter; None if it failed (e.g. out of memory)."""
    command = [sys.executable, __file__, "--worker", backend, str(length), mode, "--device", args.device,
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--d-inner", str(DIM)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  {backend} L={length} {mode}: failed ({done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    global DIM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for every backend (1 is steadier on a machine shared with other jobs)")
    parser.add_argument("--ref-max-length", type=int, default=16384, help="skip the step loop above this L")
    parser.add_argument("--pscan-max-length", type=int, default=16384,
                        help="skip pscan above this L (it needs about 3 GB per 16k steps at fwd+bwd)")
    parser.add_argument("--error-length", type=int, default=2048)
    parser.add_argument("--d-inner", type=int, default=DIM)
    parser.add_argument("--backends", nargs="+", choices=["ref", "pscan", "chunked", "triton"],
                        help="default: ref, pscan, chunked, and triton on CUDA")
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "L", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    DIM = args.d_inner
    torch.set_num_threads(args.threads)
    if args.worker:
        backend, length, mode = args.worker
        print(json.dumps(worker(backend, int(length), mode, args.device, args.repeats)))
        return

    backends = args.backends or ["ref", "pscan", "chunked"] + (["triton"] if args.device == "cuda" else [])
    limits = {"ref": args.ref_max_length, "pscan": args.pscan_max_length}
    bandwidth = copy_bandwidth() if args.device == "cuda" else None
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
          f"batch 1, d_inner {DIM}, N {D_STATE}, fp32, median of {args.repeats}"
          + (f", copy bandwidth {bandwidth / 1e12:.2f} TB/s" if bandwidth else ""))
    print(f"{'L':>6} {'mode':<8} {'backend':<8} {'median s':>9} {'peak MiB':>9} {'x ref':>7} {'x pscan':>8}"
          + (f" {'% floor':>8}" if bandwidth else ""))
    for length in args.lengths:
        for mode in ("fwd", "fwd+bwd"):
            results = {b: measure(args, b, length, mode) for b in backends if length <= limits.get(b, length)}
            for backend, result in results.items():
                if result is None:
                    continue
                ratios = [f"{results[base]['seconds'] / result['seconds']:.1f}x" if results.get(base) else "-"
                          for base in ("ref", "pscan")]
                floor = f" {100 * floor_seconds(length, mode, bandwidth) / result['seconds']:>7.0f}%" if bandwidth else ""
                print(f"{length:>6} {mode:<8} {backend:<8} {result['seconds']:>9.4f} {result['peak_mib']:>9.0f} "
                      f"{ratios[0]:>7} {ratios[1]:>8}{floor}", flush=True)
    print(f"\nmax relative error vs float64 reference at L={args.error_length} (fp32 inputs):")
    checked = [b for b in backends if b != "ref"] + ["ref"] if "ref" in backends else backends
    for backend, report in errors(args.error_length, args.device, checked).items():
        print(f"  {backend:<8} " + "  ".join(f"{name} {value:.1e}" for name, value in report.items()))


if __name__ == "__main__":
    main()
