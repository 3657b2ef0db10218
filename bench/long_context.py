"""Long-context benchmark on CPU: streaming inference with carried state up to 1M tokens, and a
checkpointed training step at 131k.

    python bench/long_context.py [--lengths 16384 65536 262144 1048576] [--blocks mamba s4] [--chunk 16384]
                                 [--threads 2] [--inference-only | --training-only | --trace]

Each measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own. Inference: one
sequence of L random DNA tokens streamed through ``Backbone.forward_chunk`` in chunks of ``--chunk`` under
``torch.inference_mode``. Training: forward + backward of one 131,072-token window through
:func:`seqpipe.chunked.chunked_forward` with per-chunk checkpointing. Also checks that streaming in chunks
of 4,096 and 65,536 gives the same outputs. Prints markdown tables with the ratios the targets name
(peak RSS at the longest L over 64k: at most 1.5; time at the longest L over 64k: at most 20).
``--trace`` instead prints the memory (VmRSS, VmHWM, glibc heap in use and free) at each of ``--lengths``
while streaming the longest, keeping a view of each chunk's output or a copy.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from functools import partial

MODEL = {"d_model": 64, "n_layers": 2}


def build(block: str):
    import torch

    from seqpipe.backbone import Backbone

    if block == "mamba":
        from seqpipe.mamba import MambaBlock

        factory = partial(MambaBlock, d_state=16)
    else:
        from seqpipe.s4 import S4Block

        factory = partial(S4Block, d_state=16)
    torch.manual_seed(0)
    return Backbone(MODEL["d_model"], MODEL["n_layers"], factory, vocab_size=6)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mb() -> dict[str, float]:
    """VmRSS and VmHWM of this process, and glibc's heap statistics (``mallinfo2``): bytes in use by live
    allocations (torch's CPU tensors among them) and bytes free but kept by the allocator."""
    import ctypes

    fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    info_type = type("MallInfo2", (ctypes.Structure,), {"_fields_": [(name, ctypes.c_size_t) for name in fields]})
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = info_type
    info = libc.mallinfo2()
    with open("/proc/self/status") as lines:
        status = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.startswith(("VmRSS", "VmHWM"))}
    return {**status, "malloc_in_use": (info.uordblks + info.hblkhd) / 2**20, "malloc_free": info.fordblks / 2**20}


def stream(model, tokens, chunk: int, keep_views: bool = False, trace: list | None = None):
    """Stream ``tokens`` (1, L) in chunks; returns the features of the last position of each chunk and the time.

    The last positions are copied out of each chunk's output: a view (``keep_views``) would keep the whole
    (1, chunk, d_model) output alive, 4 MB per chunk of 16,384 — the RSS growth with L measured before.
    ``trace``: a list that gets :func:`memory_mb` after every chunk.
    """
    import torch

    state = model.initial_state(1)
    lasts = []
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, tokens.shape[1], chunk):
            y, state = model.forward_chunk(tokens[:, start:start + chunk], state)
            lasts.append(y[:, -1] if keep_views else y[:, -1].clone())
            del y
            if trace is not None:
                trace.append({"tokens": start + chunk, "seconds": time.perf_counter() - started, **memory_mb()})
    return torch.cat(lasts), time.perf_counter() - started


def child(mode: str, block: str, length: int, chunk: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model = build(block)
    tokens = torch.randint(1, 5, (1, length), generator=torch.Generator().manual_seed(1))
    baseline = peak_rss_mb()
    if mode in ("trace", "trace-views"):
        trace = [{"tokens": 0, "seconds": 0.0, **memory_mb()}]
        stream(model, tokens, chunk, keep_views=mode == "trace-views", trace=trace)
        return {"trace": trace}
    if mode == "infer":
        stream(model, tokens[:, :chunk], chunk)  # warm-up: first-call allocations and kernel setup
        warm = peak_rss_mb()
        _, seconds = stream(model, tokens, chunk)
        return {"seconds": seconds, "tokens_per_s": length / seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": baseline,
                "rss_warm_mb": warm}
    if mode == "compare":
        small, _ = stream(model, tokens, 4096)
        full = []
        state = model.initial_state(1)
        with torch.inference_mode():
            for start in range(0, length, 65536):
                y, state = model.forward_chunk(tokens[:, start:start + 65536], state)
                full.append(y[:, 4095::4096].clone())
        large = torch.cat(full, 1)[0]
        return {"max_abs_diff": float((small - large).abs().max()), "scale": float(large.abs().max())}
    from seqpipe.chunked import chunked_forward

    started = time.perf_counter()
    features, _ = chunked_forward(model, tokens, chunk, checkpoint=True)
    features.float().pow(2).mean().backward()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens_per_s": length / seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": baseline}


def run_child(mode: str, block: str, length: int, chunk: int, threads: int, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", mode, block, str(length), str(chunk), str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536, 262144, 1048576])
    parser.add_argument("--blocks", nargs="+", default=["mamba", "s4"], choices=["mamba", "s4"])
    parser.add_argument("--chunk", type=int, default=16384, help="streaming chunk")
    parser.add_argument("--train-length", type=int, default=131072)
    parser.add_argument("--train-chunk", type=int, default=8192)
    parser.add_argument("--compare-length", type=int, default=262144, help="length of the 4k-vs-64k chunk check")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--inference-only", action="store_true", help="skip the training step and the chunk check")
    parser.add_argument("--training-only", action="store_true", help="only the training step (and the chunk check)")
    parser.add_argument("--trace", action="store_true", help="instead: memory after every chunk up to the longest L, "
                        "keeping views of each chunk's output (as this benchmark did before) and copies")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each measurement")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        mode, block, length, chunk, threads = options.child
        print(json.dumps(child(mode, block, int(length), int(chunk), int(threads))))
        return
    import torch

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available, {options.threads} used, "
          f"torch {torch.__version__}, python {platform.python_version()}, model {MODEL}, streaming chunk {options.chunk}")
    if options.trace:
        print_traces(options)
        return
    if not options.training_only:
        infer_tables(options)
    if options.inference_only:
        return
    print(f"\n| block | training step L={options.train_length:,}, checkpointed chunks of {options.train_chunk:,}: "
          "time (s) | peak RSS (MB) | streamed 4k vs 64k chunks, L=" f"{options.compare_length:,}: max abs diff (scale) |")
    print("|---|---|---|---|")
    for block in options.blocks:
        train = run_child("train", block, options.train_length, options.train_chunk, options.threads, options.timeout)
        same = run_child("compare", block, options.compare_length, 4096, options.threads, options.timeout)
        train_text = train.get("error") or f"{train['seconds']:.1f} | {train['peak_rss_mb']:.0f}"
        same_text = same.get("error") or f"{same['max_abs_diff']:.1e} ({same['scale']:.1f})"
        print(f"| {block} | {train_text} | {same_text} |", flush=True)


def infer_tables(options) -> None:
    print("\n| block | L | time (s) | tokens/s | peak RSS (MB) | RSS before streaming (MB) | peak RSS after the warm-up chunk (MB) |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for block in options.blocks:
        for length in options.lengths:
            result = results[block, length] = run_child("infer", block, length, options.chunk, options.threads, options.timeout)
            if "error" in result:
                print(f"| {block} | {length:,} | {result['error']} | | | | |", flush=True)
                continue
            print(f"| {block} | {length:,} | {result['seconds']:.1f} | {result['tokens_per_s']:,.0f} | "
                  f"{result['peak_rss_mb']:.0f} | {result['rss_before_mb']:.0f} | {result['rss_warm_mb']:.0f} |", flush=True)
    longest = max(options.lengths)
    print(f"\n| block | peak RSS {longest:,} / 65,536 (target <= 1.5) | time {longest:,} / 65,536 (target <= 20) |")
    print("|---|---|---|")
    for block in options.blocks:
        long, mid = results.get((block, longest), {}), results.get((block, 65536), {})
        if "seconds" in long and "seconds" in mid:
            print(f"| {block} | {long['peak_rss_mb'] / mid['peak_rss_mb']:.2f} | {long['seconds'] / mid['seconds']:.1f} |")


def print_traces(options) -> None:
    """Memory at each of ``--lengths`` while streaming the longest, with views of the outputs kept and with copies."""
    longest = max(options.lengths)
    print("\n| block | outputs kept as | L so far | VmRSS (MB) | VmHWM (MB) | malloc in use (MB) | malloc free, kept (MB) |")
    print("|---|---|---|---|---|---|---|")
    for block in options.blocks:
        for mode, kept in (("trace-views", "views"), ("trace", "copies")):
            result = run_child(mode, block, longest, options.chunk, options.threads, options.timeout)
            if "error" in result:
                print(f"| {block} | {kept} | {result['error']} | | | | |", flush=True)
                continue
            for row in result["trace"]:
                if row["tokens"] in (0, *options.lengths):
                    print(f"| {block} | {kept} | {row['tokens']:,} | {row['VmRSS']:.0f} | {row['VmHWM']:.0f} | "
                          f"{row['malloc_in_use']:.0f} | {row['malloc_free']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
