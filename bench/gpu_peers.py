"""Our scans against mamba_ssm's Triton SSD kernel on one GPU, and a pre-training step per block.

    python bench/gpu_peers.py --sdist PATH/mamba_ssm-2.2.4.tar.gz [--skip-training] [--n-large 128]
        [--ssd-tiles 64x8f 64x8fc1 ...] [--profile] [--mamba1-tiles 16:8x1x4/8x4x16/4x1x8 ...]
    python bench/gpu_peers.py --sdist ... --warm-peer I K   # compile 1/K of mamba_ssm's autotune configs
    python bench/gpu_peers.py --sdist ... --warm-ours       # compile every seqpipe variant of the run

Run K ``--warm-peer`` processes and one ``--warm-ours`` in parallel first (same TRITON_CACHE_DIR): Triton's
autotuner compiles its configs one after another, which took a whole 450 s device call in an earlier session;
with the binaries in the disk cache the timed run only loads and benchmarks them (its autotuner benchmarks
each config with do_bench(warmup=5, rep=25) ms instead of Triton's 25/100).

Scans (d_inner 2048, N 16, with D, z, Δ bias and softplus): seqpipe's Mamba-1 selective scan, seqpipe's SSD
(Mamba-2, 32 heads x 64, at each variant of ``--ssd-tiles``) and mamba_ssm's ``mamba_chunk_scan_combined``
(32 heads x 64, chunk 256) at the issue's shapes, forward and forward+backward, fp32 and bf16 inputs, and both
SSDs' forward+backward at ``--n-large`` states (ours at the first ``--ssd-tiles`` variant); medians of
``triton.testing.do_bench``. "% floor" is the least traffic a scan must make (fwd: read x, dt, z, B, C,
write y; fwd+bwd: that, then read them again with dy and write every gradient) over the measured
device-to-device copy bandwidth.

mamba_ssm comes from its source distribution, checked against the sha256 pinned below, unpacked into a
temporary folder; only its pure-Triton ``ops/triton`` modules are imported (stub parent packages stop its
``__init__`` from importing the CUDA extension). Nothing of it enters this repository. Needs einops.

Training: one optimizer step of the DNA pre-training recipe's model (``configs/genome_pretrain.yaml``:
d_model 128, 4 layers, next-base head, a 131,072-token window in chunks of 16,384 with per-chunk gradient
checkpointing, batch 1, bf16 autocast) for each block: tokens/s (median step time of about 5) and peak memory.

After the table, in this order: the training steps; ``--mamba1-tiles``, the Mamba-1 scan at other tiles in fp32
and bf16; ``--profile``, at the longest shape of each dtype, the GPU time of every kernel of one forward+backward
(torch.profiler) for mamba_ssm, the first two SSD variants and the Mamba-1 scan.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tarfile
import tempfile
import types
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from seqpipe.kernels import selective_scan, ssd_scan
from seqpipe.kernels import ssd_triton

MAMBA_SSM_VERSION = "2.2.4"
MAMBA_SSM_SHA256 = "e4114c69302796c91b71e90032c2d974f611608fab331582a80de6eaf075efb9"
D_INNER, HEAD_DIM, D_STATE = 2048, 64, 16
SHAPES = {torch.float32: [(4, 2048), (4, 8192), (1, 65536)], torch.bfloat16: [(4, 8192), (1, 65536)]}


def mamba_ssm_chunk_scan(sdist: Path, workdir: Path):
    """``mamba_chunk_scan_combined`` from the pinned sdist, importing only mamba_ssm's Triton modules."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != MAMBA_SSM_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest} is not the pinned mamba_ssm {MAMBA_SSM_VERSION} sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(workdir, filter="data")
    root = workdir / f"mamba_ssm-{MAMBA_SSM_VERSION}" / "mamba_ssm"
    for name, folder in (("mamba_ssm", root), ("mamba_ssm.ops", root / "ops"), ("mamba_ssm.utils", root / "utils")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]
        sys.modules[name] = stub
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined


def peer_autotuners() -> list:
    """Every autotuned kernel of mamba_ssm's Triton SSD modules (after :func:`mamba_ssm_chunk_scan`)."""
    from triton.runtime.autotuner import Autotuner

    modules = [m for name, m in sys.modules.items() if name.startswith("mamba_ssm.ops.triton.")]
    return [obj for m in modules for obj in vars(m).values() if isinstance(obj, Autotuner)]


def copy_bandwidth(size_bytes: int = 2**31) -> float:
    """Bytes per second (read plus written) of a device-to-device copy."""
    import triton.testing

    source = torch.empty(size_bytes // 4, device="cuda")
    target = torch.empty_like(source)
    return 2 * size_bytes / (triton.testing.do_bench(lambda: target.copy_(source), return_mode="median") / 1e3)


def floor_seconds(batch: int, length: int, d_state: int, dtype: torch.dtype, mode: str, bandwidth: float) -> float:
    """Least bytes a scan moves (x, z, y, dt per head ignored; B and C once per group) over ``bandwidth``."""
    channels, states = batch * D_INNER * length, batch * d_state * length
    elements = 4 * channels + 2 * states if mode == "fwd" else 11 * channels + 6 * states
    return elements * dtype.itemsize / bandwidth


def ssd_inputs(batch: int, length: int, d_state: int, dtype: torch.dtype, seed: int = 0) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    heads = D_INNER // HEAD_DIM

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(dtype).requires_grad_()

    return {"x": rand(batch, length, heads, HEAD_DIM), "dt": rand(batch, length, heads, scale=0.5),
            "A": (-torch.rand(heads, generator=gen, device="cuda") * 15 - 1).requires_grad_(),
            "B": rand(batch, length, 1, d_state), "C": rand(batch, length, 1, d_state),
            "D": torch.ones(heads, device="cuda", requires_grad=True), "z": rand(batch, length, heads, HEAD_DIM),
            "dt_bias": rand(heads, scale=0.5)}


def mamba1_inputs(batch: int, length: int, dtype: torch.dtype, seed: int = 0, d_inner: int = D_INNER) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(dtype).requires_grad_()

    A = -(torch.rand(d_inner, D_STATE, generator=gen, device="cuda") * D_STATE + 0.5)
    return {"u": rand(batch, d_inner, length), "delta": rand(batch, d_inner, length, scale=0.5),
            "A": A.requires_grad_(), "B": rand(batch, D_STATE, length), "C": rand(batch, D_STATE, length),
            "D": torch.ones(d_inner, device="cuda", requires_grad=True), "z": rand(batch, d_inner, length),
            "delta_bias": rand(d_inner, scale=0.5)}


class SSDTile(NamedTuple):
    """One seqpipe SSD variant: chunk, warps per program, and the ``ssd_triton`` flags it sets."""
    chunk: int
    warps: int
    split_from_n: int  # SPLIT_GRAD_FROM_N
    block_p: int  # GRAD_BLOCK_P
    pass_chunks: int  # PASS_CHUNKS
    dots_16bit: bool  # DOTS_16BIT (16-bit operands for 16-bit inputs)
    passed_16bit: bool  # PASSED_STATES_16BIT (16-bit inputs' passed states in their own dtype)


SSD_FLAGS = ("NUM_WARPS", "SPLIT_GRAD_FROM_N", "GRAD_BLOCK_P", "PASS_CHUNKS", "DOTS_16BIT", "PASSED_STATES_16BIT")
# the module's defaults, read before a variant sets them: the letters f, p and c name departures from these
DEFAULT_SPLIT_FROM_N, DEFAULT_BLOCK_P, DEFAULT_PASS_CHUNKS = (ssd_triton.SPLIT_GRAD_FROM_N, ssd_triton.GRAD_BLOCK_P,
                                                             ssd_triton.PASS_CHUNKS)


def parse_ssd_tile(spec: str) -> SSDTile:
    """"CHUNKxWARPS[f][h][s][cK][pBLOCK]": "64x8" -> chunk 64, 8 warps, the gradient kernel as two launches at every
    N, the default channel block of its loop over P and chunks a step of the state pass (GRAD_BLOCK_P, PASS_CHUNKS),
    fp32 product operands and passed states; "f": the gradient kernel as one fused launch below N =
    SPLIT_GRAD_FROM_N (64) and two from it on, the module's default; "h": 16-bit product operands for 16-bit inputs
    (DOTS_16BIT); "s": 16-bit inputs' passed states in their own dtype where the gradients run as two launches
    (PASSED_STATES_16BIT); "c1": the state pass one chunk a step (as before issue #16); "p64": channel blocks of 64.
    "64x4fhs" is the module's defaults."""
    match = re.fullmatch(r"(\d+)x(\d+)(f?)(h?)(s?)(?:c(\d+))?(?:p(\d+))?", spec)
    if match is None:
        raise SystemExit(f"SSD variant {spec!r} is not CHUNKxWARPS[f][h][s][cK][pBLOCK]")
    chunk, warps, fused, dots_16bit, passed_16bit, pass_chunks, block = match.groups()
    return SSDTile(int(chunk), int(warps), DEFAULT_SPLIT_FROM_N if fused else 0,
                   int(block) if block else DEFAULT_BLOCK_P, int(pass_chunks) if pass_chunks else DEFAULT_PASS_CHUNKS,
                   bool(dots_16bit), bool(passed_16bit))


def tile_name(tile: SSDTile) -> str:
    return (f"{tile.chunk}/{tile.warps}{'f' if tile.split_from_n else ''}{'h' if tile.dots_16bit else ''}"
            f"{'s' if tile.passed_16bit else ''}"
            + ("" if tile.pass_chunks == DEFAULT_PASS_CHUNKS else f"c{tile.pass_chunks}")
            + ("" if tile.block_p == DEFAULT_BLOCK_P else f"p{tile.block_p}"))


def ssd_variant(tile: SSDTile, inputs: dict):
    """seqpipe's SSD at one variant, as a no-argument callable (it sets the module's flags when called)."""

    def run():
        values = (tile.warps, tile.split_from_n, tile.block_p, tile.pass_chunks, tile.dots_16bit, tile.passed_16bit)
        for flag, value in zip(SSD_FLAGS, values):
            setattr(ssd_triton, flag, value)
        return ssd_scan(**inputs, dt_softplus=True, chunk_size=tile.chunk, backend="triton")

    return run


def time_ms(run, inputs: dict) -> tuple[float, float]:
    """Median ms of the forward (no grad) and of forward+backward (gradient of a fixed random weighting)."""
    import triton.testing

    with torch.no_grad():
        forward = triton.testing.do_bench(run, return_mode="median")
    y = run()
    weights = torch.randn_like(y)
    leaves = [v for v in inputs.values() if v.requires_grad]

    def both():
        torch.autograd.grad((run() * weights).sum(), leaves)

    return forward, triton.testing.do_bench(both, return_mode="median")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def scans(chunk_scan, n_large: int, ssd_tiles: list[SSDTile]) -> None:
    import triton.testing

    for tuner in peer_autotuners():
        tuner.do_bench = partial(triton.testing.do_bench, warmup=5, rep=25)  # over its cached_property
    defaults = [getattr(ssd_triton, flag) for flag in SSD_FLAGS]
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; d_inner {D_INNER}, N {D_STATE}; ms are medians of do_bench; "
          f"T/w = seqpipe SSD chunk / warps per program (f: one fused gradient launch below N "
          f"{DEFAULT_SPLIT_FROM_N}, two from it on; h: 16-bit products for 16-bit inputs, s: 16-bit inputs' passed states "
          f"in their dtype, cK: state pass K chunks "
          f"a step, pB: gradient channel blocks of B); "
          f"peer / ours N{n_large} = fwd+bwd of mamba_ssm's SSD and ours (the first variant; two launches where one "
          f"does not fit) "
          f"at N {n_large}; err = |SSD - mamba_ssm| / |mamba_ssm| of y")
    print(f"{'dtype':<5} {'shape':<8} | {'Mamba-1 fwd':>11} {'fwd+bwd':>8} {'% floor':>11} | {'T/w':>11} "
          f"{'SSD fwd':>8} {'fwd+bwd':>8} {'% floor':>11} | {'mamba_ssm fwd':>13} {'fwd+bwd':>8} "
          f"{f'peer N{n_large}':>10} {f'ours N{n_large}':>10} | {'mamba_ssm/SSD f+b':>17} {'err':>7}")
    for dtype, shapes in SHAPES.items():
        for batch, length in shapes:
            label = f"{'fp32' if dtype == torch.float32 else 'bf16':<5} {f'B{batch} L{length // 1024}k':<8}"
            m1 = mamba1_inputs(batch, length, dtype)
            m1_ms = time_ms(lambda: selective_scan(**m1, delta_softplus=True, backend="triton"), m1)
            del m1
            peer_large = ours_large = float("nan")
            if n_large:  # both SSDs at the wide state (ours at the first variant)
                large = ssd_inputs(batch, length, n_large, dtype)
                peer_large = time_ms(partial(chunk_scan, **large, chunk_size=256, dt_softplus=True), large)[1]
                ours_large = time_ms(ssd_variant(ssd_tiles[0], large), large)[1]
                del large
            ssd = ssd_inputs(batch, length, D_STATE, dtype)
            peer_run = partial(chunk_scan, **ssd, chunk_size=256, dt_softplus=True)
            peer_ms = time_ms(peer_run, ssd)
            m1_floor = [100 * floor_seconds(batch, length, D_STATE, dtype, mode, bandwidth) * 1e3 / ms
                        for mode, ms in zip(("fwd", "fwd+bwd"), m1_ms)]
            for tile in ssd_tiles:
                ours_run = ssd_variant(tile, ssd)
                ours_ms = time_ms(ours_run, ssd)
                with torch.no_grad():
                    error = relative_error(ours_run(), peer_run())
                floor = [100 * floor_seconds(batch, length, D_STATE, dtype, mode, bandwidth) * 1e3 / ms
                         for mode, ms in zip(("fwd", "fwd+bwd"), ours_ms)]
                name = tile_name(tile)
                print(f"{label} | {m1_ms[0]:>11.2f} {m1_ms[1]:>8.2f} {m1_floor[0]:>4.0f}% /{m1_floor[1]:>3.0f}% | "
                      f"{name:>11} {ours_ms[0]:>8.2f} {ours_ms[1]:>8.2f} {floor[0]:>4.0f}% /{floor[1]:>3.0f}% | "
                      f"{peer_ms[0]:>13.2f} {peer_ms[1]:>8.2f} {peer_large:>10.2f} {ours_large:>10.2f} | "
                      f"{peer_ms[1] / ours_ms[1]:>16.2f}x "
                      f"{error:>7.1e}", flush=True)
            del ssd
    for flag, value in zip(SSD_FLAGS, defaults):
        setattr(ssd_triton, flag, value)


def kernel_profile(run, inputs: dict, repeats: int = 5) -> list[tuple[str, float]]:
    """(kernel name, ms per forward+backward) of every GPU kernel, from torch.profiler over ``repeats`` runs."""
    from torch.profiler import ProfilerActivity, profile

    y = run()
    weights = torch.randn_like(y)
    leaves = [v for v in inputs.values() if v.requires_grad]

    def both():
        torch.autograd.grad((run() * weights).sum(), leaves)

    both()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(repeats):
            both()
        torch.cuda.synchronize()
    events = [(e.key, e.self_device_time_total / 1e3 / repeats) for e in trace.key_averages()]
    return sorted([e for e in events if e[1] > 0], key=lambda e: -e[1])


def profiles(chunk_scan, ssd_tiles: list[SSDTile], top: int = 12) -> None:
    """Where forward+backward spends its GPU time, per kernel, at the longest shapes: seqpipe SSD, mamba_ssm SSD,
    seqpipe Mamba-1."""
    for dtype, shapes in SHAPES.items():
        for batch, length in shapes[-1:]:
            label = f"{'fp32' if dtype == torch.float32 else 'bf16'} B{batch} L{length // 1024}k"
            ssd = ssd_inputs(batch, length, D_STATE, dtype)
            runs = {"mamba_ssm": partial(chunk_scan, **ssd, chunk_size=256, dt_softplus=True)}
            for tile in ssd_tiles:
                runs[f"SSD {tile_name(tile)}"] = ssd_variant(tile, ssd)
            m1 = mamba1_inputs(batch, length, dtype)
            for name, run in runs.items():
                events = kernel_profile(run, ssd)
                _print_profile(f"{label} {name}", events, top)
            _print_profile(f"{label} Mamba-1", kernel_profile(
                lambda: selective_scan(**m1, delta_softplus=True, backend="triton"), m1), top)
            del ssd, m1


def _print_profile(title: str, events: list[tuple[str, float]], top: int) -> None:
    total = sum(ms for _, ms in events)
    print(f"\n{title}: {total:.2f} ms of kernels per fwd+bwd")
    for name, ms in events[:top]:
        print(f"  {ms:7.3f} ms {100 * ms / total:4.0f}%  {name[:90]}")


class Mamba1Tile(NamedTuple):
    """One seqpipe Mamba-1 scan variant: ``scan_triton``'s CHUNK and the ``Tile`` (channels, warps, states on lanes
    a program) of its forward scan, its segment summaries and its backward scan."""
    chunk: int
    forward: tuple[int, int, int]
    summary: tuple[int, int, int]
    backward: tuple[int, int, int]
    #: ``scan_triton``'s constant behind each field, in field order
    CONSTANTS = ("CHUNK", "FORWARD_TILE", "SUMMARY_TILE", "BACKWARD_TILE")

    def set(self) -> None:
        from seqpipe.kernels import scan_triton

        setattr(scan_triton, "CHUNK", self.chunk)
        for name, tile in zip(self.CONSTANTS[1:], self[1:]):
            setattr(scan_triton, name, scan_triton.Tile(*tile))

    def __str__(self) -> str:
        return f"{self.chunk}:" + "/".join("x".join(str(v) for v in tile) for tile in self[1:])


def default_mamba1_tile() -> Mamba1Tile:
    from seqpipe.kernels import scan_triton

    return Mamba1Tile(*(getattr(scan_triton, name) for name in Mamba1Tile.CONSTANTS))


def parse_mamba1_tile(spec: str) -> Mamba1Tile:
    """"CHUNK:FORWARD/SUMMARY/BACKWARD", each BLOCK_DxWARPSxSTATE_LANES: "16:8x1x4/8x4x16/4x1x8" -> chunks of 16
    steps; the forward scan 8 channels, 1 warp and 4 of the states on lanes a program, the segment summaries 8, 4
    and 16, the backward scan 4, 1 and 8."""
    tile = r"(\d+)x(\d+)x(\d+)"
    match = re.fullmatch(rf"(\d+):{tile}/{tile}/{tile}", spec)
    if match is None:
        raise SystemExit(f"Mamba-1 variant {spec!r} is not CHUNK:FORWARD/SUMMARY/BACKWARD, each "
                         "BLOCK_DxWARPSxSTATE_LANES")
    values = [int(v) for v in match.groups()]
    tiles = [tuple(values[i:i + 3]) for i in (1, 4, 7)]
    if any(lanes & (lanes - 1) or not lanes for _, _, lanes in tiles):
        raise SystemExit(f"Mamba-1 variant {spec!r}: state lanes must be powers of two")
    return Mamba1Tile(values[0], *tiles)


def mamba1_tiles(tiles: list[Mamba1Tile]) -> None:
    """Mamba-1 Triton scan at each tile, fp32 and bf16 inputs (bf16 read by the kernels as it is)."""
    from seqpipe.kernels import scan_triton

    bandwidth = copy_bandwidth()
    print("\nMamba-1 scan tiles (CHUNK: forward / summaries / backward, each BLOCK_D x warps x state lanes), fwd / "
          "fwd+bwd ms and % of the floor")
    defaults = default_mamba1_tile()
    for batch, length in [(4, 8192), (1, 65536)]:
        inputs = {dtype: mamba1_inputs(batch, length, dtype) for dtype in (torch.float32, torch.bfloat16)}
        for tile in tiles:
            tile.set()
            cells = []
            for name, dtype, run in (
                ("fp32", torch.float32, lambda: selective_scan(**inputs[torch.float32], delta_softplus=True,
                                                                backend="triton")),
                ("bf16", torch.bfloat16, lambda: selective_scan(**inputs[torch.bfloat16], delta_softplus=True,
                                                                 backend="triton")),
            ):
                ms = time_ms(run, inputs[dtype])
                floor = [100 * floor_seconds(batch, length, D_STATE, dtype, mode, bandwidth) * 1e3 / t
                         for mode, t in zip(("fwd", "fwd+bwd"), ms)]
                cells.append(f"{name} {ms[0]:6.2f} /{ms[1]:6.2f} ({floor[0]:3.0f}% /{floor[1]:3.0f}%)")
            print(f"B{batch} L{length // 1024}k {tile}: " + " | ".join(cells),
                  flush=True)
        del inputs
    defaults.set()


def training(length: int = 131072, chunk: int = 16384) -> None:
    from seqpipe.backbone import Backbone
    from seqpipe.chunked import chunked_forward
    from seqpipe.mamba import MambaBlock
    from seqpipe.mamba2 import Mamba2Block
    from seqpipe.s4 import S4Block

    print(f"\nPre-training step (genome_pretrain recipe model): d_model 128, 4 layers, one {length:,}-token window, "
          f"chunks of {chunk:,} checkpointed, bf16 autocast, AdamW; median of about 5 steps")
    print(f"{'block':<8} {'ms/step':>8} {'tokens/s':>10} {'peak GiB':>9}")
    blocks = {"mamba": partial(MambaBlock, d_state=16), "mamba2": partial(Mamba2Block, d_state=64, head_dim=64),
              "s4": partial(S4Block, d_state=64)}
    import triton.testing

    for name, block in blocks.items():
        torch.manual_seed(0)
        backbone = Backbone(d_model=128, n_layers=4, block=block, vocab_size=6).cuda()
        head = torch.nn.Linear(128, 4).cuda()
        optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=1e-3)
        tokens = torch.randint(1, 6, (1, length + 1), device="cuda")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                features, _ = chunked_forward(backbone, tokens[:, :-1], chunk, checkpoint=True)
                loss = F.cross_entropy(head(features).flatten(0, 1).float(), (tokens[:, 1:] - 1).clamp(max=3).flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        torch.cuda.reset_peak_memory_stats()
        ms = triton.testing.do_bench(step, warmup=1, rep=1000, return_mode="median")  # about 5 steps
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{name:<8} {ms:>8.1f} {length / ms * 1e3:>10,.0f} {peak:>9.2f}", flush=True)
        del backbone, head, optimizer


def warm_peer(chunk_scan, index: int, count: int, n_large: int) -> None:
    """Compile every ``count``-th config (from ``index``) of each mamba_ssm autotuned kernel by autotuning over
    that slice at the first shape of each dtype, where the timed run tunes (the keys hold no length, but Triton
    specialises integer arguments equal to 1 or divisible by 16, such as the batch and the chunk count)."""
    for tuner in peer_autotuners():
        tuner.configs = tuner.configs[index::count] or tuner.configs[:1]
    for dtype, shapes in SHAPES.items():
        for d_state in (D_STATE, n_large) if n_large else (D_STATE,):
            inputs = ssd_inputs(*shapes[0], d_state, dtype)
            y = chunk_scan(**inputs, chunk_size=256, dt_softplus=True)
            torch.autograd.grad(y.float().square().sum(), [v for v in inputs.values() if v.requires_grad])
    torch.cuda.synchronize()


def warm_ours(ssd_tiles: list[SSDTile], mamba1_tiles: list[Mamba1Tile], n_large: int) -> None:
    """Compile seqpipe's SSD variants and Mamba-1 scan tiles of the run at every shape, forward and backward."""
    from seqpipe.kernels import scan_triton

    defaults = default_mamba1_tile()
    for dtype, shapes in SHAPES.items():
        for batch, length in shapes:
            for d_state in (D_STATE, n_large) if n_large else (D_STATE,):
                inputs = ssd_inputs(batch, length, d_state, dtype)
                for tile in ssd_tiles if d_state == D_STATE else ssd_tiles[:1]:
                    y = ssd_variant(tile, inputs)()
                    torch.autograd.grad(y.float().square().sum(), [v for v in inputs.values() if v.requires_grad])
            m1 = mamba1_inputs(batch, length, dtype)
            for tile in [defaults, *mamba1_tiles]:
                tile.set()
                y = selective_scan(**m1, delta_softplus=True, backend="triton")
                torch.autograd.grad(y.float().square().sum(), [v for v in m1.values() if v.requires_grad])
    defaults.set()
    torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdist", type=Path, required=True, help=f"mamba_ssm-{MAMBA_SSM_VERSION}.tar.gz")
    parser.add_argument("--n-large", type=int, default=128, help="both SSDs are also timed at this N (0: not)")
    parser.add_argument("--ssd-tiles", nargs="+", default=["64x4fhs", "64x8f"],
                        help="seqpipe SSD variants CHUNKxNUM_WARPS[f][h][s][cK][pBLOCK] (f: one fused gradient launch "
                             f"below N {DEFAULT_SPLIT_FROM_N}, two from it on; without f two at every N; "
                             "h: 16-bit products for 16-bit inputs; s: 16-bit inputs' passed states in their dtype; cK: the state pass K chunks a step; "
                             "pBLOCK: channel block of the gradient kernel)")
    parser.add_argument("--warm-peer", nargs=2, type=int, metavar=("I", "K"),
                        help="only compile mamba_ssm's configs I, I+K, ... (run K such processes first)")
    parser.add_argument("--warm-ours", action="store_true", help="only compile seqpipe's kernels of the run")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="last: per-kernel GPU time of mamba_ssm, the first two SSD variants, Mamba-1")
    parser.add_argument("--mamba1-tiles", nargs="*", default=[],
                        help="Mamba-1 scan variants CHUNK:FORWARD/SUMMARY/BACKWARD, each BLOCK_DxWARPSxSTATE_LANES, "
                             "timed in fp32 and bf16")
    args = parser.parse_args()
    import triton

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"CUDA {torch.version.cuda}, mamba_ssm {MAMBA_SSM_VERSION} (Triton files only)")
    tiles = [parse_ssd_tile(tile) for tile in args.ssd_tiles]
    m1_tiles = [parse_mamba1_tile(tile) for tile in args.mamba1_tiles]
    if args.warm_ours:
        warm_ours(tiles, m1_tiles, args.n_large)
        return
    with tempfile.TemporaryDirectory() as workdir:
        chunk_scan = mamba_ssm_chunk_scan(args.sdist, Path(workdir))
        if args.warm_peer:
            warm_peer(chunk_scan, *args.warm_peer, args.n_large)
            return
        scans(chunk_scan, args.n_large, tiles)
        if not args.skip_training:
            training()
        if m1_tiles:
            mamba1_tiles(m1_tiles)
        if args.profile:  # after the table, whose first rows autotune mamba_ssm where the warm-up compiled
            profiles(chunk_scan, tiles[:2])


if __name__ == "__main__":
    main()
