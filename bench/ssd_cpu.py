"""The SSD (Mamba-2) scan's CPU path, the chunked matrix form, against the Mamba-1 chunked scan, side by side.

    python bench/ssd_cpu.py [--d-inner 256] [--lengths 1024 4096 16384] [--threads 2]

Same width for both (d_inner channels, N 16, batch 1, fp32, with D, z, Δ bias and softplus): Mamba-1 has one
decay per (channel, state), SSD one per head of ``--head-dim`` channels. Forward and forward+backward,
median of ``--repeats`` runs; ratio = Mamba-1 time / SSD time (above 1: SSD faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seqpipe.kernels import selective_scan, ssd_scan


def seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-inner", type=int, default=256)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heads, N = args.d_inner // args.head_dim, args.d_state
    print(f"CPU, {args.threads} threads, torch {torch.__version__}: d_inner {args.d_inner} (SSD: {heads} heads x "
          f"{args.head_dim}, chunk {args.chunk_size}), N {N}, batch 1, fp32; median of {args.repeats}")
    print(f"{'L':>6} {'mode':<8} {'Mamba-1 chunked s':>17} {'SSD chunked s':>13} {'ratio':>6}")
    gen = torch.Generator().manual_seed(0)
    for length in args.lengths:
        def rand(*shape):
            return torch.randn(*shape, generator=gen).requires_grad_()

        m1 = dict(u=rand(1, args.d_inner, length), delta=rand(1, args.d_inner, length),
                  A=(-torch.rand(args.d_inner, N, generator=gen) * N - 0.5).requires_grad_(),
                  B=rand(1, N, length), C=rand(1, N, length), D=rand(args.d_inner), z=rand(1, args.d_inner, length),
                  delta_bias=rand(args.d_inner))
        ssd = dict(x=rand(1, length, heads, args.head_dim), dt=rand(1, length, heads),
                   A=(-torch.rand(heads, generator=gen) * 15 - 1).requires_grad_(), B=rand(1, length, 1, N),
                   C=rand(1, length, 1, N), D=rand(heads), z=rand(1, length, heads, args.head_dim), dt_bias=rand(heads))
        runs = {
            "m1": lambda: selective_scan(**m1, delta_softplus=True, backend="chunked"),
            "ssd": lambda: ssd_scan(**ssd, dt_softplus=True, chunk_size=args.chunk_size, backend="chunked"),
        }
        for mode in ("fwd", "fwd+bwd"):
            def timed(run):
                if mode == "fwd":
                    with torch.no_grad():
                        return seconds(run, args.repeats)
                return seconds(lambda: run().sum().backward(), args.repeats)

            m1_s, ssd_s = timed(runs["m1"]), timed(runs["ssd"])
            print(f"{length:>6} {mode:<8} {m1_s:>17.4f} {ssd_s:>13.4f} {m1_s / ssd_s:>5.1f}x", flush=True)


if __name__ == "__main__":
    main()
