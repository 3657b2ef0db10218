"""Registers, spills, shared memory and static SASS instruction counts of the Mamba-1 scan kernels and of the SSD
state pass as compiled for the H100/H200 (sm_90), on the CPU: no GPU needed.

    python bench/triton_sass.py [--dtype fp32|bf16] [--kernels fwd bwd summary_fwd summary_bwd]
        [--tile 16:8x1x4/8x4x16/4x1x8]
        [--length 65536] [--d-inner 2048] [--d-state 16]
    python bench/triton_sass.py --ssd-pass 128x4 512x4 [--pass-chunks 8 16] [--d-state 128]

Compiles ``scan_triton``'s kernels with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` at the shape of
``bench/gpu_peers.py`` (B, C time-varying, D, z, delta_bias, softplus), assembles the PTX with Triton's ptxas and
disassembles it with nvdisasm. The loop over chunks is nearly all of each kernel, so the counts are per chunk of
``CHUNK x BLOCK_D x N`` state elements a program: a proxy for the time of these compute-bound kernels that a CPU
can measure. It found triton 3.6 lowering ``associative_scan(reverse=True)`` with lane reversals although the
scanned axis lies in each thread's registers (issue #16, bench/RESULTS.md): warp shuffles (SHFL) are reductions
over the states on lanes (or over channels) or lane moves, BAR/STS/LDS layout conversions through shared memory,
MUFU exps. ``--ssd-pass BLOCKxWARPS ...``: instead, ``ssd_triton._pass_states_kernel`` (forward and reverse,
32 heads x 64 channels) at those state elements and warps per program and at each ``--pass-chunks``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import re
import subprocess
import tempfile

OPS = ["MUFU", "SHFL", "BAR", "STS", "LDS", "LDG", "STG", "FFMA", "FMUL", "FADD", "STL", "LDL"]


def ast_source(fn, pointers: dict[str, str], ints: dict[str, int], constants: dict):
    """``fn`` specialised as the JIT would: pointer types, ints (1 a constant, multiples of 16 marked so)."""
    from triton.compiler import ASTSource

    passed = {k: v for k, v in ints.items() if v != 1}
    constants = {**constants, **{k: 1 for k in ints if k not in passed}}
    signature = {**pointers, **{k: "i32" for k in passed}, **{k: "constexpr" for k in constants}}
    aligned = [*pointers, *(k for k, v in passed.items() if v % 16 == 0)]
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in aligned}
    return ASTSource(fn, {k: signature[k] for k in fn.arg_names}, constexprs=constants, attrs=attrs)


def compile_sm90(source, warps: int):
    """The kernel compiled for sm_90, and ptxas' (registers, bytes spilled) for it."""
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as handle:
            handle.write(kernel.asm["ptx"])
        report = subprocess.run([_tool("ptxas"), "-arch=sm_90a", "-v", ptx, "-o", os.devnull], capture_output=True,
                                text=True).stderr
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    return kernel, registers, int(re.search(r"(\d+) bytes spill stores", report).group(1))


def sass_op_counts(kernel) -> collections.Counter:
    """Static count of each SASS opcode (without its modifiers) of a compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as handle:
            handle.write(kernel.asm["cubin"])
        sass = subprocess.run([_tool("nvdisasm"), "-c", cubin], capture_output=True, text=True, check=True).stdout
    opcodes = re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
    return collections.Counter(match.group(1) for match in opcodes)


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin", name)


def scan_kernels(dtype: str, length: int, d_inner: int, d_state: int) -> dict:
    """name -> (kernel function, pointer types, ints, constants, warps) of the Mamba-1 scan kernels at a shape, with
    the constants ``scan_triton._meta`` gives them (B, C time-varying, D, z, delta_bias, softplus; batch 1)."""
    import torch

    from seqpipe.kernels import scan_triton as st

    io, f = ("*bf16" if dtype == "bf16" else "*fp32"), "*fp32"
    like = dict(device="meta", dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    u, A, B = torch.empty(1, d_inner, length, **like), torch.empty(d_inner, d_state), torch.empty(1, d_state, length)
    channel = torch.empty(d_inner)
    rows = dict(s_b=d_state * length, s_g=0, s_n=length, s_l=1)
    inputs = dict(u_ptr=io, delta_ptr=io, A_ptr=f, B_ptr=io, C_ptr=io, D_ptr=f, z_ptr=io, bias_ptr=f)
    kernels = {}
    for backward in (False, True):
        meta = st._meta(u, A, B, B, channel, u, channel, True, 1, backward=backward)
        n_chunks, segment_chunks, _ = meta["chunks"]
        part_chunks, parts = meta["parts"]
        ints = dict(L=length, D=d_inner, Dg=d_inner, N=d_state, n_chunks=n_chunks, segment_chunks=segment_chunks,
                    part_chunks=part_chunks, parts=parts,
                    **{f"{k[0]}b{k[1:]}": v for k, v in rows.items()}, **{f"{k[0]}c{k[1:]}": v for k, v in rows.items()})
        scan, summary = ({k: v for k, v in meta[part].items() if k != "num_warps"} for part in ("scan", "summary"))
        warps, summary_warps = meta["scan"]["num_warps"], meta["summary"]["num_warps"]
        if backward:
            kernels["bwd"] = (st._scan_bwd_kernel, dict(inputs, starts_ptr=f, ungated_ptr=io, grad_out_ptr=io,
                                                        carry_ptr=f, du_ptr=io, ddelta_ptr=io, dz_ptr=io, dB_ptr=f,
                                                        dC_ptr=f, dA_ptr=f, dskip_ptr=f, dbias_ptr=f, dh0_ptr=f),
                              ints, scan, warps)
            kernels["summary_bwd"] = (st._segment_summary_bwd_kernel,
                                      dict(end_ptr=f, decay_ptr=f, delta_ptr=io, A_ptr=f, C_ptr=io, z_ptr=io,
                                           bias_ptr=f, grad_out_ptr=io), ints, summary, summary_warps)
        else:
            kernels["fwd"] = (st._scan_fwd_kernel, dict(inputs, start_ptr=f, out_ptr=io, last_ptr=f, starts_ptr=f,
                                                        ungated_ptr=io),
                              ints, dict(scan, HAS_START=True, SAVE_STARTS=True, SAVE_UNGATED=True), warps)
            kernels["summary_fwd"] = (st._segment_summary_fwd_kernel, dict(end_ptr=f, decay_ptr=f, u_ptr=io,
                                                                           delta_ptr=io, A_ptr=f, B_ptr=io, bias_ptr=f),
                                      ints, summary, summary_warps)
    return {name: (fn, pointers, {k: v for k, v in ints.items() if k in fn.arg_names}, constants, warps)
            for name, (fn, pointers, ints, constants, warps) in kernels.items()}


def ssd_pass(block: int, warps: int, chunks: int, d_state: int, reverse: bool, passed: str = "fp32"):
    """``ssd_triton._pass_states_kernel`` compiled for sm_90 at 32 heads x 64 channels, chunk 64, the passed states
    stored as ``passed`` (fp32: in place; bf16: 16-bit inputs' copy); as ``compile_sm90``."""
    import triton.language as tl

    from seqpipe.kernels import ssd_triton

    pointers = dict(states_ptr="*fp32", passed_ptr=f"*{passed}", log_decay_ptr="*fp32", init_ptr="*fp32",
                    final_ptr="*fp32")
    ints = dict(H=32, PN=64 * d_state, n_chunks=1024)
    constants = dict(T=64, BLOCK=block, CHUNKS=chunks, HAS_INIT=False, REVERSE=reverse, COMPUTE=tl.float32)
    return compile_sm90(ast_source(ssd_triton._pass_states_kernel, pointers, ints, constants), warps)


def main() -> None:
    from gpu_peers import default_mamba1_tile, parse_mamba1_tile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="u, delta, B, C, z, y and gradients")
    parser.add_argument("--kernels", nargs="+", choices=["fwd", "bwd", "summary_fwd", "summary_bwd"],
                        default=["fwd", "bwd", "summary_fwd", "summary_bwd"])
    parser.add_argument("--tile", help="CHUNK:FORWARD/SUMMARY/BACKWARD, each BLOCK_DxWARPSxSTATE_LANES "
                                       "(default: scan_triton's)")
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument("--d-inner", type=int, default=2048)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--ssd-pass", nargs="+", metavar="BLOCKxWARPS", help="the SSD state pass instead")
    parser.add_argument("--pass-chunks", nargs="+", type=int, default=[8, 16], help="with --ssd-pass: CHUNKS")
    parser.add_argument("--passed", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
                        help="with --ssd-pass: the dtype the passed states are stored in")
    args = parser.parse_args()
    if args.ssd_pass:
        for spec in args.ssd_pass:
            block, warps = (int(v) for v in spec.split("x"))
            for chunks, passed, reverse in itertools.product(args.pass_chunks, args.passed, (False, True)):
                kernel, registers, spilled = ssd_pass(block, warps, chunks, args.d_state, reverse, passed)
                ops = sass_op_counts(kernel)
                print(f"SSD pass {'reverse' if reverse else 'forward'}, {block} state elements x {warps} warps, "
                      f"{chunks} chunks a step, stored as {passed}: {registers} registers, {spilled} B spilled, "
                      f"{kernel.metadata.shared} B shared; " + ", ".join(f"{op} {ops[op]}" for op in OPS))
        return
    if args.tile:
        parse_mamba1_tile(args.tile).set()
    print(f"{args.dtype}, L {args.length}, d_inner {args.d_inner}, N {args.d_state}; tile {default_mamba1_tile()} "
          "(CHUNK:FORWARD/SUMMARY/BACKWARD, each BLOCK_DxWARPSxSTATE_LANES)")
    kernels = scan_kernels(args.dtype, args.length, args.d_inner, args.d_state)
    for name in args.kernels:
        fn, pointers, ints, constants, warps = kernels[name]
        kernel, registers, spilled = compile_sm90(ast_source(fn, pointers, ints, constants), warps)
        ops = sass_op_counts(kernel)
        print(f"{name}: {registers} registers, {spilled} B spilled, {kernel.metadata.shared} B shared, "
              f"{sum(ops.values())} SASS instructions: " + ", ".join(f"{op} {ops[op]}" for op in OPS))


if __name__ == "__main__":
    main()
