"""GPU-only measurements: the Triton scan's tile sizes, and a training step on a 1M-token window.

    python bench/gpu.py [--sweep-length 65536] [--d-inner 1024] [--tiles 8x32x1024x4 ...] [--train-length 1048576]

Sweep: the fused Triton scan at each (BLOCK_D channels per program, CHUNK steps per tile, SEGMENT_PROGRAMS:
the program count up to which L is split into segments, 1 = no split; NUM_WARPS per program; every kernel alike,
the states on 16 lanes), forward and forward+backward, as a share of the memory floor of ``bench/scan.py``.
Training: one forward+backward of a 4-layer backbone (d_model 128, batch 1) on a token window of
``--train-length``, run chunk by chunk with carried state and per-chunk gradient checkpointing
(``seqpipe.chunked.chunked_forward``); peak memory is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import scan as scan_bench  # noqa: E402  (bench/scan.py: inputs, copy bandwidth, memory floor)
from gpu_peers import Mamba1Tile  # noqa: E402

from seqpipe.backbone import Backbone  # noqa: E402
from seqpipe.chunked import chunked_forward  # noqa: E402
from seqpipe.kernels import scan_triton  # noqa: E402
from seqpipe.mamba import MambaBlock  # noqa: E402
from seqpipe.s4 import S4Block  # noqa: E402


def cuda_seconds(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sweep(length: int, d_inner: int, tiles: list[tuple[int, int, int, int]]) -> None:
    scan_bench.DIM = d_inner
    bandwidth = scan_bench.copy_bandwidth()
    print(f"Triton scan tiles: d_inner {d_inner}, N {scan_bench.D_STATE}, L {length}, batch 1, fp32, "
          f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    print(f"{'BLOCK_D':>7} {'CHUNK':>6} {'SEG_PROG':>8} {'warps':>5} {'programs':>8} {'fwd ms':>8} {'% floor':>8} "
          f"{'fwd+bwd ms':>11} {'% floor':>8}")
    inputs = scan_bench.make_inputs(length, "cuda", requires_grad=True)

    def forward():
        with torch.no_grad():
            scan_bench.run_backend("triton", inputs)

    def forward_backward():
        scan_bench.run_backend("triton", inputs).sum().backward()

    for block_d, chunk, segment_programs, warps in tiles:
        Mamba1Tile(chunk, *[(block_d, warps, 16)] * 3).set()  # every kernel alike
        scan_triton.SEGMENT_PROGRAMS = segment_programs
        grid = scan_triton._meta(inputs["u"], inputs["A"], inputs["B"], inputs["C"], None, None, None, True, 1,
                                 backward=False)["grid"]
        fwd, both = cuda_seconds(forward), cuda_seconds(forward_backward)
        floors = [100 * scan_bench.floor_seconds(length, mode, bandwidth) / t for mode, t in (("fwd", fwd), ("fwd+bwd", both))]
        print(f"{block_d:>7} {chunk:>6} {segment_programs:>8} {warps:>5} {grid[1] * grid[2]:>8} {fwd * 1e3:>8.2f} "
              f"{floors[0]:>7.0f}% {both * 1e3:>11.2f} {floors[1]:>7.0f}%", flush=True)


def training_step(length: int, chunk: int) -> None:
    print(f"\nTraining step on one {length:,}-token window: 4 layers, d_model 128, chunks of {chunk:,}, "
          "checkpointed per chunk")
    print(f"{'block':<6} {'seconds':>8} {'peak GiB':>9} {'tokens/s':>10}")
    blocks = {"mamba": lambda d: MambaBlock(d, d_state=16), "s4": lambda d: S4Block(d, d_state=64)}
    for name, block in blocks.items():
        torch.manual_seed(0)
        backbone = Backbone(d_model=128, n_layers=4, block=block, vocab_size=6).cuda()
        tokens = torch.randint(1, 6, (1, length), device="cuda")

        def step():
            features, _ = chunked_forward(backbone, tokens, chunk, checkpoint=True)
            features.float().pow(2).mean().backward()

        torch.cuda.reset_peak_memory_stats()
        seconds = cuda_seconds(step, repeats=2)
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{name:<6} {seconds:>8.2f} {peak:>9.2f} {length / seconds:>10,.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep-length", type=int, default=65536)
    parser.add_argument("--d-inner", type=int, default=1024)
    parser.add_argument("--train-length", type=int, default=1 << 20)
    parser.add_argument("--train-chunk", type=int, default=1 << 16, help="0: skip the training step")
    parser.add_argument("--tiles", nargs="+", default=["8x32x1x4", "8x32x1024x4", "8x32x4096x4", "16x16x4096x4",
                                                       "8x32x4096x1", "8x32x4096x2", "16x16x4096x2"],
                        help="BLOCK_DxCHUNKxSEGMENT_PROGRAMSxNUM_WARPS")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    sweep(args.sweep_length, args.d_inner, [tuple(int(v) for v in tile.split("x")) for tile in args.tiles])
    if args.train_chunk:
        training_step(args.train_length, args.train_chunk)


if __name__ == "__main__":
    main()
