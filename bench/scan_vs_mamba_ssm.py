"""Our selective scan against mamba_ssm's own PyTorch references, forward and every gradient.

    python bench/scan_vs_mamba_ssm.py [--version 2.3.2.post1]

Downloads the mamba_ssm source distribution from PyPI once (cached under ~/.cache/seqpipe/mamba_ssm),
takes ``selective_scan_ref`` and ``selective_state_update_ref`` out of it (their CUDA extension is not
built: only those two pure-PyTorch functions are executed), and compares our backends with them on
fresh random inputs for each option set. mamba_ssm's references compute in float32 whatever the input
dtype, so the comparison is in float32 and agreement means float32 rounding (about 1e-6). Needs ``einops`` (mamba_ssm's references use it): ``pip install einops``.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import tarfile
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F

from seqpipe.kernels import selective_scan, selective_state_update

CACHE = Path.home() / ".cache" / "seqpipe" / "mamba_ssm"
FILES = {"selective_scan_ref": "mamba_ssm/ops/selective_scan_interface.py",
         "selective_state_update_ref": "mamba_ssm/ops/triton/selective_state_update.py"}


def mamba_references(version: str) -> dict:
    """The two reference functions, compiled from mamba_ssm's source distribution."""
    folder = CACHE / version
    if not all((folder / path).exists() for path in FILES.values()):
        with urllib.request.urlopen("https://pypi.org/pypi/mamba-ssm/json") as response:
            releases = json.load(response)["releases"]
        (url,) = [item["url"] for item in releases[version] if item["packagetype"] == "sdist"]
        with urllib.request.urlopen(url) as response:
            archive = tarfile.open(fileobj=io.BytesIO(response.read()))
        for member in archive.getmembers():
            relative = member.name.split("/", 1)[-1]
            if relative in FILES.values():
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_bytes(archive.extractfile(member).read())
    from einops import rearrange, repeat

    namespace = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
    for name, path in FILES.items():
        tree = ast.parse((folder / path).read_text())
        (function,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
        exec(compile(ast.Module([function], type_ignores=[]), str(folder / path), "exec"), namespace)
    return namespace


def scan_inputs(options: str, seed: int, batch=2, dim=8, length=64, d_state=4) -> dict:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float32)  # noqa: E731
    groups = 2 if options == "grouped" else None
    bc_shape = (dim, d_state) if options == "time-invariant" else (batch, groups, d_state, length) if groups else (batch, d_state, length)
    inputs = {"u": rand(batch, dim, length), "delta": rand(batch, dim, length) * 0.5,
              "A": -torch.rand(dim, d_state, generator=g, dtype=torch.float32) * 2 - 0.1,
              "B": rand(*bc_shape), "C": rand(*bc_shape)}
    if options == "D, z, delta_bias, softplus":
        inputs.update(D=rand(dim), z=rand(batch, dim, length), delta_bias=rand(dim) * 0.5, delta_softplus=True)
    return {k: v.requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def relative_errors(ours_fn, theirs_fn, inputs: dict) -> float:
    """max over y, last state and every gradient of max|ours - theirs| / max|theirs|."""
    results = []
    for fn in (ours_fn, theirs_fn):
        leaves = {k: v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        y, last = fn(leaves)
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
        ((y * weights).sum() + last.sum()).backward()
        results.append([y, last] + [v.grad for v in leaves.values() if isinstance(v, torch.Tensor)])
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(*results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="2.3.2.post1")
    args = parser.parse_args()
    refs = mamba_references(args.version)
    backends = ["ref", "chunked"]
    print(f"mamba_ssm {args.version} references vs seqpipe, float32, max relative error over y, last state and all gradients")
    print(f"{'options':<28} " + " ".join(f"{b:>10}" for b in backends))
    for seed, options in enumerate(["plain", "D, z, delta_bias, softplus", "grouped", "time-invariant"]):
        inputs = scan_inputs(options, seed)
        theirs = lambda x: refs["selective_scan_ref"](**x, return_last_state=True)  # noqa: E731
        row = [relative_errors(lambda x, b=b: selective_scan(**x, return_last_state=True, backend=b), theirs, inputs)
               for b in backends]
        print(f"{options:<28} " + " ".join(f"{e:>10.1e}" for e in row))

    g = torch.Generator().manual_seed(11)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float32)  # noqa: E731
    state, x, dt, z = rand(2, 8, 4), rand(2, 8), rand(2, 8), rand(2, 8)
    A, B, C, D, dt_bias = -torch.rand(8, 4, generator=g, dtype=torch.float32), rand(2, 4), rand(2, 4), rand(8), rand(8)
    theirs_state = state.clone()  # mamba_ssm's reference updates the state in place
    y_theirs = refs["selective_state_update_ref"](theirs_state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=True)
    y_ours, state_ours = selective_state_update(state, x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=True)
    error = max(((a - b).abs().max() / b.abs().max()).item() for a, b in ((y_ours, y_theirs), (state_ours, theirs_state)))
    print(f"{'state update (one token)':<28} {error:>10.1e}")


if __name__ == "__main__":
    main()
