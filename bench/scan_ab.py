"""This tree's Triton scans against those of another revision, side by side in one process (GPU).

    mkdir OLD; for f in scan_triton ssd_triton; do git show REV:kernels/$f.py > OLD/$f.py; done
    python bench/scan_ab.py --old-kernels OLD [--kernels mamba1 ssd] [--shapes 4x2048 4x8192 1x65536] [--d-inner 2048]

Times the Mamba-1 selective scan and the SSD scan of both at ``bench/gpu_peers.py``'s shapes and inputs (fp32 and
bf16; d_inner 2048, N 16; SSD chunk 64), median ms of the forward and of forward+backward, and prints the largest
relative difference of y and every gradient between the two (0 when a change only moves work around).
``--shapes`` (BATCHxLENGTH) and ``--d-inner`` (the Mamba-1 scan's only) time others, e.g. the 131k DNA
pre-training recipe's scans: ``--kernels mamba1 --d-inner 256 --shapes 1x16384 1x131072 8x2048``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from gpu_peers import D_INNER, mamba1_inputs, ssd_inputs, time_ms
from seqpipe.kernels.scan_triton import selective_scan_triton
from seqpipe.kernels.ssd_triton import ssd_scan_triton

SHAPES = ["4x2048", "4x8192", "1x65536"]


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"old_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outputs_and_grads(run, inputs: dict) -> list[torch.Tensor]:
    """y and the gradients of every input that requires one, for a fixed random weighting of y."""
    y = run()
    weights = torch.randn(y.shape, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda").to(y.dtype)
    leaves = [v for v in inputs.values() if v.requires_grad]
    return [y] + list(torch.autograd.grad((y * weights).sum(), leaves))


def largest_difference(new: list[torch.Tensor], old: list[torch.Tensor]) -> float:
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()
               for a, b in zip(new, old))


def compare(name: str, tag: str, scans: dict, inputs: dict, **options) -> None:
    runs = {version: (lambda scan=scan: scan(**inputs, **options)) for version, scan in scans.items()}
    times = {version: time_ms(run, inputs) for version, run in runs.items()}
    difference = largest_difference(outputs_and_grads(runs["new"], inputs), outputs_and_grads(runs["old"], inputs))
    (old_fwd, old_both), (new_fwd, new_both) = times["old"], times["new"]
    print(f"{name:7s} {tag}: old {old_fwd:.2f} / {old_both:.2f}  new {new_fwd:.2f} / {new_both:.2f}  "
          f"fwd+bwd {old_both / new_both:.2f}x  largest difference {difference:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-kernels", type=Path, required=True,
                        help="a folder with another revision's scan_triton.py and ssd_triton.py")
    parser.add_argument("--kernels", nargs="+", choices=["mamba1", "ssd"], default=["mamba1", "ssd"])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="BATCHxLENGTH")
    parser.add_argument("--d-inner", type=int, default=D_INNER, help="channels of the Mamba-1 scan")
    args = parser.parse_args()
    old_mamba1 = load_module(args.old_kernels / "scan_triton.py").selective_scan_triton
    old_ssd = load_module(args.old_kernels / "ssd_triton.py").ssd_scan_triton
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; ms fwd / fwd+bwd (median of do_bench)")
    for batch, length in (map(int, shape.split("x")) for shape in args.shapes):
        for dtype in (torch.float32, torch.bfloat16):
            tag = f"{str(dtype).removeprefix('torch.')} B{batch} L{length // 1024}k"
            if "mamba1" in args.kernels:
                compare("Mamba-1", tag, {"old": old_mamba1, "new": selective_scan_triton},
                        mamba1_inputs(batch, length, dtype, d_inner=args.d_inner), delta_softplus=True)
            if "ssd" in args.kernels:
                compare("SSD", tag, {"old": old_ssd, "new": ssd_scan_triton}, ssd_inputs(batch, length, 16, dtype),
                        dt_softplus=True, chunk_size=64)


if __name__ == "__main__":
    main()
