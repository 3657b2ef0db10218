"""S4 kernel generation and FFT convolution: time and peak memory from L = 1k to 1M.

    python bench/s4_kernels.py [--lengths 1024 4096 ...] [--channels 32] [--d-state 64] [--device cpu|cuda]

Each (length, operation) runs in a fresh process, so its peak memory is its own: on CPU the resident
memory above the process's prior peak, on CUDA ``max_memory_allocated`` above the inputs. On CUDA the S4D
kernel uses the Triton Vandermonde, on CPU the chunked PyTorch one. Times are medians of repeats. The ratio columns show the growth per 4× L:
an L log L method grows about 4.4–4.8× per step; a quadratic one 16×.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import statistics
import time

OPERATIONS = ("s4d_kernel", "dplr_kernel", "fft_conv", "direct_conv")
DIRECT_CONV_MAX_LENGTH = 16384  # O(H L²): beyond this the direct convolution takes minutes here


def _inputs(operation: str, length: int, channels: int, d_state: int, device: str = "cpu"):
    import torch
    import torch.nn.functional as F

    from seqpipe.kernels import fft_conv
    from seqpipe.kernels.s4d import diag_init, discretize_diag, log_uniform_dt, s4d_kernel
    from seqpipe.kernels.s4_dplr import conjugate_pairs, dplr_init, dplr_kernel

    generator = torch.Generator().manual_seed(0)
    log_dt = log_uniform_dt(channels, 1e-3, 1e-1, generator).to(device)
    C = torch.randn(channels, d_state // 2, generator=generator, dtype=torch.complex64).to(device)
    if operation == "s4d_kernel":
        A, B = (v.to(device, torch.complex64).repeat(channels, 1) for v in diag_init("legs", d_state // 2))
        backend = "chunked" if device == "cpu" else "triton"
        return lambda: s4d_kernel(C, discretize_diag(A, B, log_dt, "zoh"), length, backend=backend)
    if operation == "dplr_kernel":
        Lambda, P, B = (conjugate_pairs(v.to(device, torch.complex64).repeat(channels, 1)) for v in dplr_init(d_state))
        return lambda: dplr_kernel(conjugate_pairs(C), Lambda, P, B, log_dt, length, "bilinear")
    u = torch.randn(1, channels, length, generator=generator).to(device)
    k = (torch.randn(channels, length, generator=generator) * torch.exp(-torch.arange(length) / 100.0)).to(device)
    if operation == "fft_conv":
        return lambda: fft_conv(u, k)
    weight = k.flip(-1).unsqueeze(1)  # conv1d correlates: flip for a convolution
    return lambda: F.conv1d(F.pad(u, (length - 1, 0)), weight, groups=channels)


def _measure(operation: str, length: int, channels: int, d_state: int, device: str, queue) -> None:
    """Child process: peak memory of one run above the prior peak, then the median of timed repeats."""
    import torch

    cuda = device == "cuda"
    torch.set_num_threads(2)

    def timed(run) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            run()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(_inputs(operation, 256, channels, d_state, device))  # warm-up: allocator, thread pools, compilation
    run = _inputs(operation, length, channels, d_state, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    first = timed(run)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    repeats = 5 if first < 0.2 else 3 if first < 2 else 1
    times = [first] + [timed(run) for _ in range(repeats - 1)]
    queue.put((statistics.median(times), peak_mib))


def measure(operation: str, length: int, channels: int, d_state: int, device: str = "cpu") -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_measure, args=(operation, length, channels, d_state, device, queue))
    worker.start()
    result = queue.get()
    worker.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4**k * 1024 for k in range(6)])
    parser.add_argument("--channels", type=int, default=32, help="H")
    parser.add_argument("--d-state", type=int, default=64, help="N (real state size)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)

    import torch

    H, N = args.channels, args.d_state
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, 2 threads"
    print(f"# S4 kernels on {args.device} — {where}, torch {torch.__version__}, "
          f"H={H}, N={N} (S4D keeps N/2 complex states; DPLR works in all N), batch 1, fp32")
    header = (f"{'L':>9} | {'S4D kernel ms':>13} {'×/4L':>5} | {'DPLR kernel ms':>14} {'×/4L':>5} | "
              f"{'fft_conv ms':>11} {'×/4L':>5} | {'direct ms':>9} | {'S4D MiB':>7} {'DPLR MiB':>8} "
              f"{'conv MiB':>8} | {'(H,N/2,L) MiB':>13}")
    print(header)
    print("-" * len(header))
    previous: dict[str, float] = {}
    for length in args.lengths:
        results = {
            op: measure(op, length, H, N, args.device)
            for op in OPERATIONS
            if op != "direct_conv" or length <= DIRECT_CONV_MAX_LENGTH
        }

        def cell(op: str, width: int) -> str:
            if op not in results:
                return f"{'—':>{width}}"
            return f"{results[op][0] * 1e3:>{width}.1f}"

        def ratio(op: str) -> str:
            return f"{results[op][0] / previous[op]:>5.1f}" if op in previous else f"{'':>5}"

        materialised = H * (N // 2) * length * 8 / 2**20  # complex64 bytes of the tensor we never build
        print(f"{length:>9} | {cell('s4d_kernel', 13)} {ratio('s4d_kernel')} | {cell('dplr_kernel', 14)} "
              f"{ratio('dplr_kernel')} | {cell('fft_conv', 11)} {ratio('fft_conv')} | {cell('direct_conv', 9)} | "
              f"{results['s4d_kernel'][1]:>7.0f} {results['dplr_kernel'][1]:>8.0f} {results['fft_conv'][1]:>8.0f} | "
              f"{materialised:>13.0f}", flush=True)
        previous = {op: value[0] for op, value in results.items()}


if __name__ == "__main__":
    main()
