"""16-bit products in the SSD kernels at wide states on the GPU, variant by variant (issue #16).

    python bench/ssd_16bit_probe.py [--variants n16 n64 n64-unrolled ...] [--jobs 4] [--time 1x65536]

Runs every variant in its own process (an illegal address ends a CUDA context): bf16 inputs with 16-bit products,
the 131k training step's tiling (4 heads x P 64, chunk 64, no z, D, dt_bias with softplus, an initial state and
the final state's gradient) at L 165 unless the variant says otherwise, twice, against the float64 reference on
the same rounded inputs. Prints each output's relative error (bf16 bound 1.5e-2), whether the two runs agree bit
for bit, and, for an output past the bound, where its error lies (shares of the squared error over quarters of
the chunk's steps and over quarters of the states or channels). ``--time``: instead, the median ms of forward and
forward+backward of each variant at that shape (32 heads), one at a time.

Variants: ``nK`` (N = K), and at N 64 unless said: ``-pK`` (P = K), ``-split`` / ``-fused`` (the gradient kernel
as two launches / one at every N; by default one below N 64, two from it on), ``-bpK`` (GRAD_BLOCK_P K),
``-chunkK``, ``-z``, ``-wK`` (K warps), ``-LK`` (length K), ``-fp32`` (fp32 operands, as for 32-bit inputs),
``-unrolled`` (the gradient kernel's loops over channel blocks unrolled by tl.static_range, as
before the fix: wrong and unrepeatable gradients at N 64 on the H200), ``-siteK`` (the K-th product of the
gradient kernels and their helpers, in source order, with fp32 operands; ``--sites`` lists them), ``-gradfp32``
(all of their products fp32), ``-fwdfp32`` (the other kernels' products fp32).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

BF16_BOUND = 1.5e-2
# the gradient kernels and the functions they call that make products, in source order
GRAD_FUNCTIONS = ("_add_head_bc_terms", "_store_bc", "_chunk_grad_kernel", "_chunk_grad_bc_kernel")
PRODUCT = re.compile(r"\b(NARROW_DOT|DOT), PRECISION\)")


def kernel_span(source: str, name: str) -> tuple[int, int]:
    """Character span of the ``@triton.jit`` function ``name`` in ``source`` (up to the next top-level def)."""
    start = source.index(f"def {name}(")
    following = re.compile(r"^(@triton\.jit|def |class )", re.M).search(source, start + 1)
    return start, following.start() if following else len(source)


def products(source: str, names: tuple[str, ...]) -> list[re.Match]:
    """The products of the functions ``names``, in source order."""
    spans = sorted(kernel_span(source, name) for name in names)
    return [m for start, end in spans for m in PRODUCT.finditer(source, start, end)
            if "_dot(" in source[source.rfind("\n", 0, m.start()):m.start()]]  # not a helper's call


def with_fp32_products(source: str, names: tuple[str, ...], which: list[int] | None) -> str:
    """``source`` with the products of the functions ``names`` (those at the indices ``which``, or all) taking
    COMPUTE (fp32, read as tf32) operands."""
    matches = products(source, names)
    for index in sorted(range(len(matches)) if which is None else which, reverse=True):
        m = matches[index]
        source = source[:m.start()] + "COMPUTE, PRECISION)" + source[m.end():]
    return source


def product_lines(source: str) -> list[str]:
    return [source[source.rfind("\n", 0, m.start()) + 1:source.find("\n", m.end())].strip()
            for m in products(source, GRAD_FUNCTIONS)]


# variant parts: a name and a number (n64: N 64), or a word that sets one setting
NUMBERED = {"n": "N", "p": "P", "bp": "block_p", "chunk": "chunk", "w": "warps", "L": "length"}
# (split_from_n: SPLIT_GRAD_FROM_N, 0 for two gradient launches at every N, 1 << 20 for one; None: the module's)
WORDS = {"split": ("split_from_n", 0), "fused": ("split_from_n", 1 << 20), "z": ("z", True),
         "unrolled": ("unrolled", True), "fp32": ("dots_16bit", False), "gradfp32": ("grad_fp32", True),
         "fwdfp32": ("fwd_fp32", True)}


def parse(variant: str) -> dict:
    """Settings of a variant name such as ``n64-site3-L16384``."""
    settings = dict(N=64, P=64, split_from_n=None, block_p=32, chunk=64, z=False, warps=4, length=165, sites=[],
                    grad_fp32=False, fwd_fp32=False, unrolled=False, dots_16bit=True)
    for part in variant.split("-"):
        numbered = re.fullmatch(r"([a-zA-Z]+?)(\d+)", part)
        if part in WORDS:
            key, value = WORDS[part]
            settings[key] = value
        elif numbered and numbered[1] in NUMBERED:
            settings[NUMBERED[numbered[1]]] = int(numbered[2])
        elif numbered and numbered[1] == "site":
            settings["sites"].append(int(numbered[2]))
        else:
            raise SystemExit(f"unknown variant part {part!r} in {variant!r}")
    return settings


def replaced(source: str, old: str, new: str, count: int) -> str:
    """``source`` with its ``count`` occurrences of ``old`` replaced; an error when it has another number (the kernel
    file changed under the probe)."""
    if source.count(old) != count:
        raise SystemExit(f"expected {count} of {old!r} in ssd_triton.py, found {source.count(old)}: update the probe")
    return source.replace(old, new)


def variant_module(settings: dict, workdir: Path):
    """A copy of seqpipe.kernels.ssd_triton with the variant's products in fp32, imported from ``workdir``."""
    from seqpipe.kernels import ssd_triton

    source = inspect.getsource(ssd_triton)
    if settings["grad_fp32"]:
        source = with_fp32_products(source, GRAD_FUNCTIONS, None)
    elif settings["sites"]:
        source = with_fp32_products(source, GRAD_FUNCTIONS, settings["sites"])
    if settings["unrolled"]:
        source = replaced(source, "tl.range(0, P_BLOCKS)", "tl.static_range(P_BLOCKS)", 2)
    if settings["fwd_fp32"]:  # the other kernels take DOT as an argument: make their launches pass COMPUTE
        source = replaced(source, "**dict(meta, DOT=_narrow_dot(meta))", "**dict(meta, DOT=meta['COMPUTE'])", 2)
        source = replaced(source, "HAS_D=D is not None, HAS_Z=z is not None, **meta)",
                          "HAS_D=D is not None, HAS_Z=z is not None, **dict(meta, DOT=meta['COMPUTE']))", 1)
    path = workdir / "ssd_triton_variant.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ssd_triton_variant", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.DOTS_16BIT = settings["dots_16bit"]
    if settings["split_from_n"] is not None:
        module.SPLIT_GRAD_FROM_N = settings["split_from_n"]
    module.GRAD_BLOCK_P, module.NUM_WARPS = settings["block_p"], settings["warps"]
    return module


def inputs(settings: dict, dtype, device, heads: int = 4, batch: int = 1) -> dict:
    gen = torch.Generator().manual_seed(3)
    L, H, P, N, b = settings["length"], heads, settings["P"], settings["N"], batch

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device, dtype)

    x = {"x": rand(b, L, H, P), "dt": rand(b, L, H, scale=0.5), "A": -(rand(H).abs() + 0.2), "B": rand(b, L, 1, N),
         "C": rand(b, L, 1, N), "D": rand(H), "z": rand(b, L, H, P) if settings["z"] else None,
         "dt_bias": rand(H, scale=0.3), "initial_state": rand(b, H, P, N)}
    return {k: None if v is None else v.requires_grad_() for k, v in x.items()}


def outputs(scan, x: dict) -> dict:
    y, final = scan(**x, dt_softplus=True, return_final_state=True)
    gen = torch.Generator().manual_seed(123)
    wy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
    ws = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(final.device, final.dtype)
    names = [k for k, v in x.items() if v is not None]
    grads = torch.autograd.grad((y * wy).sum() + (final * ws).sum(), [x[k] for k in names])
    return {k: v.detach().double().cpu() for k, v in {"y": y, "final_state": final,
                                                        **{f"grad_{k}": g for k, g in zip(names, grads)}}.items()}


def where(error: torch.Tensor, name: str, chunk: int) -> dict:
    """Shares of the squared error over quarters of the chunk's steps and over 4 blocks of the last axis."""
    shares = {}
    sq = error.pow(2)
    total = sq.sum().item() or 1.0
    if name in ("grad_x", "grad_z", "grad_B", "grad_C", "grad_dt", "y"):
        steps = torch.arange(sq.shape[1]) % chunk
        shares["steps"] = [round(sq[:, (steps // (chunk // 4)) == q].sum().item() / total, 2) for q in range(4)]
    if name in ("grad_x", "grad_z", "grad_B", "grad_C", "y", "grad_initial_state", "final_state"):
        width = sq.shape[-1]
        shares["last axis"] = [round(sq[..., q * width // 4:(q + 1) * width // 4].sum().item() / total, 2)
                               for q in range(4)]
    return shares


def run_one(variant: str, device: str) -> dict:
    from seqpipe.kernels import ssd_scan_ref

    settings = parse(variant)
    with tempfile.TemporaryDirectory() as tmp:
        module = variant_module(settings, Path(tmp))
        x = inputs(settings, torch.bfloat16, device)
        scan = functools.partial(module.ssd_scan_triton, chunk_size=settings["chunk"])
        actual = outputs(scan, x)
        again = outputs(scan, x)
    exact = {k: None if v is None else v.detach().double().cpu().requires_grad_() for k, v in x.items()}
    expected = outputs(ssd_scan_ref, exact)
    result = {"repeatable": all(torch.equal(actual[k], again[k]) for k in actual)}
    for name in expected:
        error = actual[name] - expected[name]
        relative = (error.norm() / expected[name].norm()).item()
        result[name] = {"error": relative, **(where(error, name, settings["chunk"]) if relative >= BF16_BOUND
                                              else {})}
    return result


def time_one(variant: str, shape: str) -> dict:
    """Median ms of the forward and of forward+backward at ``shape`` (BATCHxLENGTH), 32 heads, bf16."""
    from gpu_peers import time_ms

    settings = parse(variant)
    batch, length = (int(v) for v in shape.split("x"))
    settings["length"] = length
    with tempfile.TemporaryDirectory() as tmp:
        module = variant_module(settings, Path(tmp))
        x = {k: v for k, v in inputs(settings, torch.bfloat16, "cuda", heads=32, batch=batch).items()
             if v is not None and k != "initial_state"}
        forward, both = time_ms(functools.partial(module.ssd_scan_triton, **x, dt_softplus=True,
                                                  chunk_size=settings["chunk"]), x)
    return {"fwd": forward, "fwd+bwd": both}


def run_isolated(variant: str, device: str, timeout: int, shape: str | None = None) -> tuple[str, dict | str]:
    command = [sys.executable, __file__, "--one", variant, "--device", device] + (["--time", shape] if shape else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return variant, "timed out"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if "Error" in line or "error" in line]
        return variant, f"exit {done.returncode}: {lines[-1] if lines else done.stderr[-200:]}"[:240]
    return variant, json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--timeout", type=int, default=240)
    parser.add_argument("--device", default="cuda",
                        help="cpu: check the harness under TRITON_INTERPRET=1 (whose tl.dot multiplies bf16 operands' "
                             "raw bits: only -fp32 / -gradfp32-fwdfp32 variants come out right there)")
    parser.add_argument("--time", metavar="BATCHxLENGTH", help="time the variants (one at a time, on the GPU) instead")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--sites", action="store_true", help="list the gradient kernel's products and exit")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(time_one(args.one, args.time) if args.time else run_one(args.one, args.device)))
        return
    from seqpipe.kernels import ssd_triton

    source = inspect.getsource(ssd_triton)
    lines = product_lines(source)
    if args.sites:
        for i, line in enumerate(lines):
            print(f"site{i}: {line}")
        return
    variants = args.variants or ["n16", "n32", "n64", "n128", "n64-p128", "n64-fused", "n64-bp16", "n64-chunk32",
                                 "n64-chunk128", "n64-z", "n64-w8", "n64-unrolled", "n128-unrolled"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"# {device}, torch {torch.__version__}, triton {importlib.import_module('triton').__version__}; bf16, "
          f"16-bit products, bound {BF16_BOUND}")
    for i, line in enumerate(lines):
        print(f"# site{i}: {line}")
    if args.time:
        for variant in variants:  # one at a time: alone on the GPU
            _, result = run_isolated(variant, args.device, args.timeout, args.time)
            print(f"{variant:<22} {args.time} " + (result if isinstance(result, str) else
                                                    f"fwd {result['fwd']:.2f} ms, fwd+bwd {result['fwd+bwd']:.2f} ms"),
                  flush=True)
        return
    with ThreadPoolExecutor(args.jobs) as pool:
        for variant, result in pool.map(lambda v: run_isolated(v, args.device, args.timeout), variants):
            if isinstance(result, str):
                print(f"{variant:<22} {result}")
                continue
            repeatable = result.pop("repeatable")
            bad = {k: v for k, v in result.items() if v["error"] >= BF16_BOUND}
            errors = " ".join(f"{k.removeprefix('grad_')}={v['error']:.1e}" for k, v in result.items())
            print(f"{variant:<22} {'WRONG' if bad else 'ok   '} {'' if repeatable else 'NOT REPEATABLE '}{errors}")
            for name, info in bad.items():
                detail = {k: v for k, v in info.items() if k != "error"}
                print(f"{'':<28}{name}: {detail}")


if __name__ == "__main__":
    main()
