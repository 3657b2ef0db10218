"""Where seqpipe's Triton SSD spends one forward+backward, launch by launch, on one GPU (issue #16).

    python bench/ssd_launches.py [--variants 64x4fh 64x4fhp32 64x4fh:g1 64x4fhs ...] [--states 16 128]

For each dtype and shape of ``gpu_peers.SHAPES``, each state width and each variant: the ``do_bench`` medians of
forward and forward+backward (32 heads x 64, with z, as ``bench/gpu_peers.py``), then every kernel launch of one
forward+backward (the gradient kernel as [X] dx/dz/ddt or [XBC] with dB/dC; the separate dB/dC launch is
``_chunk_grad_bc_kernel``) with its GPU time (CUDA events around the launch, mean of 5 runs), registers, spilled
registers and shared memory per program. Variants are ``gpu_peers.py --ssd-tiles`` specs, optionally followed by
``:gK``, which launches the gradient kernels with Triton's ``num_stages`` K, by ``:sBxW``, which runs the state pass
with B state elements and W warps a program (``ssd_triton.PASS_BLOCK``, ``PASS_WARPS``), and by ``:hKxW``, which sums
dB/dC over K heads a program of W warps in the separate dB/dC launch (``ssd_triton.BC_HEADS``, ``BC_WARPS``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_peers  # noqa: E402
from seqpipe.kernels import ssd_triton  # noqa: E402

VARIANT = re.compile(r"([^:]+)(?::g(\d+))?(?::s(\d+)x(\d+))?(?::h(\d+)x(\d+))?")
KERNELS = ("_chunk_state_kernel", "_pass_states_kernel", "_chunk_output_kernel", "_chunk_state_grad_kernel",
           "_chunk_grad_kernel", "_chunk_grad_bc_kernel")


class TimedKernel:
    """Stands in for one of ``ssd_triton``'s kernels: records each launch's name, CUDA events and compiled sizes,
    and passes ``num_stages`` to the gradient kernels when ``grad_stages`` is set."""

    launches: list = []                            # (name, start event, end event)
    sizes: dict = {}                               # name -> (registers, spills, shared bytes)
    grad_stages: int | None = None

    def __init__(self, name: str, kernel):
        self.name, self.kernel = name, kernel

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            name = self.name
            if "WITH_BC" in kwargs:
                name += "[XBC]" if kwargs["WITH_BC"] else "[X]"
            if "P_BLOCKS" in kwargs and TimedKernel.grad_stages:  # a gradient kernel
                kwargs["num_stages"] = TimedKernel.grad_stages
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            compiled = launch(*args, **kwargs)
            end.record()
            TimedKernel.launches.append((name, start, end))
            TimedKernel.sizes[name] = (compiled.n_regs, compiled.n_spills, compiled.metadata.shared)
            return compiled
        return run


def per_launch(run, inputs: dict, repeats: int = 5) -> dict[str, float]:
    """Mean GPU ms of each launch name over ``repeats`` forward+backward runs, after three unrecorded ones."""
    weights = torch.randn_like(run())
    leaves = [v for v in inputs.values() if v.requires_grad]
    for _ in range(3):
        torch.autograd.grad((run() * weights).sum(), leaves)
    torch.cuda.synchronize()
    TimedKernel.launches.clear()
    for _ in range(repeats):
        torch.autograd.grad((run() * weights).sum(), leaves)
    torch.cuda.synchronize()
    times = defaultdict(float)
    for name, start, end in TimedKernel.launches:
        times[name] += start.elapsed_time(end) / repeats
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["64x4fh"])
    parser.add_argument("--states", nargs="+", type=int, default=[16, 128])
    args = parser.parse_args()
    variants = [VARIANT.fullmatch(spec) for spec in args.variants]
    if not all(variants):
        raise SystemExit(f"a variant is not TILE[:gK][:sBxW][:hKxW]: {args.variants}")
    for name in KERNELS:
        setattr(ssd_triton, name, TimedKernel(name, getattr(ssd_triton, name)))
    pass_default = (ssd_triton.PASS_BLOCK, ssd_triton.PASS_WARPS)
    bc_default = (ssd_triton.BC_HEADS, ssd_triton.BC_WARPS)
    for dtype, shapes in gpu_peers.SHAPES.items():
        for batch, length in shapes:
            for d_state in args.states:
                inputs = gpu_peers.ssd_inputs(batch, length, d_state, dtype)
                for variant in variants:
                    spec, (tile, stages, pass_block, pass_warps, bc_heads, bc_warps) = (
                        variant.group(0), variant.groups())
                    TimedKernel.grad_stages = int(stages) if stages else None
                    ssd_triton.PASS_BLOCK, ssd_triton.PASS_WARPS = ((int(pass_block), int(pass_warps)) if pass_block
                                                                    else pass_default)
                    ssd_triton.BC_HEADS, ssd_triton.BC_WARPS = ((int(bc_heads), int(bc_warps)) if bc_heads
                                                                else bc_default)
                    run = gpu_peers.ssd_variant(gpu_peers.parse_ssd_tile(tile), inputs)
                    forward, both = gpu_peers.time_ms(run, inputs)
                    times = per_launch(run, inputs)
                    label = f"{'fp32' if dtype == torch.float32 else 'bf16'} B{batch} L{length // 1024}k N{d_state}"
                    print(f"\n{label} {spec}: fwd {forward:.2f} ms, fwd+bwd {both:.2f} ms (do_bench)")
                    for launch, ms in sorted(times.items(), key=lambda item: -item[1]):
                        regs, spills, shared = TimedKernel.sizes[launch]
                        print(f"  {ms:7.3f} ms  {launch:<28} registers {regs:>3}, spilled {spills:>3}, "
                              f"shared {shared // 1024:>3} KiB", flush=True)
                del inputs


if __name__ == "__main__":
    main()
