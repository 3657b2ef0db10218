"""Bounds of every memory access of seqpipe's SSD kernels as compiled for the H100/H200, checked on the CPU.

    python bench/ssd_ptx_bounds.py [--dots bf16|fp16|fp32] [--narrow-dots ...] [--split] [--block-p 32]
        [--warps 8] [--batch 1 --length 65536] [--heads 32 --head-dim 64 --d-state 16 --chunk 64] [--no-z]

Compiles the four chunk kernels (with ``--split``, the gradient kernel's two launches: ``_chunk_grad_kernel`` for
dx/dz/ddt and ``_chunk_grad_bc_kernel`` for dB/dC, the latter at ``ssd_triton.BC_WARPS`` warps) with
``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` at a shape (by default the benchmark's: 32 heads x P 64, N 16,
one group, chunk 64, bf16 inputs with D and z; tiles as ``ssd_triton`` picks them; ints specialised as the JIT does: 1
a constant, multiples of 16 marked so), prints ptxas' registers, spills and shared memory, then evaluates the integer
arithmetic of each kernel's PTX (straight-line code) for all threads of a few programs (first, last, middle), with the
tensors' sizes at ``--batch``/``--length``, 32-bit wrap-around included, and checks:

- every global load/store (under its predicate) lies inside the tensor its pointer parameter points into;
- every global and shared load/store is aligned to its width (else "misaligned address" on the GPU);
- every shared load/store/ldmatrix/stmatrix lies inside the kernel's dynamic shared memory;
- every wgmma operand read from shared memory (its descriptor decoded: start, strides, swizzle; K-major or
  N/M-major) lies inside it, as the PTX canonical layouts say ("read"), and also if the tensor cores read
  whole swizzle rows, or 16 rows for an n8 K-major operand ("whole rows"; the suspected cause of issue #16).

Not modelled: values of floating-point registers and loads (addresses never depend on them here); loops, so
not the sequential state pass (the only kernel reading initial_state or writing the final state; it has no
products, and its code does not depend on the product settings checked here).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import numpy as np

from triton_sass import ast_source, compile_sm90

MASK32 = np.uint64(0xFFFFFFFF)
SMEM_PER_BLOCK = 227 * 1024  # sm_90's largest dynamic shared memory of one block


@dataclass(frozen=True)
class Shape:
    """A launch's sizes: x, z (batch, length, heads, head_dim), B, C (batch, length, 1, d_state), D and z optional."""

    heads: int = 32
    head_dim: int = 64
    d_state: int = 16
    chunk: int = 64
    batch: int = 1
    length: int = 65536
    has_z: bool = True
    has_d: bool = True


def signed32(v):
    v = (v & MASK32).astype(np.int64)
    return np.where(v >= 2**31, v - 2**32, v)


def split_operands(text: str) -> list[str]:
    """Comma-separated operands, braces kept together."""
    out, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    return out + ([current.strip()] if current.strip() else [])


def decode_descriptor(v: int) -> dict:
    return dict(start=(v & 0x3FFF) << 4, lbo=((v >> 16) & 0x3FFF) << 4, sbo=((v >> 32) & 0x3FFF) << 4,
                swizzle={0: 0, 1: 128, 2: 64, 3: 32}[(v >> 62) & 3])


def operand_bytes(desc: dict, rows: int, k: int, width: int, mn_major: bool) -> tuple[int, int]:
    """[lo, hi) of the bytes a wgmma reads for a rows x k operand (rows: M or N) from its descriptor."""
    row_bytes = desc["swizzle"] or 16
    lo, hi = 1 << 40, -1
    for r in range(rows):
        for kk in range(k):
            if mn_major:  # row_bytes along M/N, 8-k groups SBO apart, M/N atoms LBO apart
                atom = row_bytes // width
                u = desc["start"] + (r // atom) * desc["lbo"] + (r % atom) * width + (kk // 8) * desc["sbo"] \
                    + (kk % 8) * row_bytes
            else:         # K-major: rows of row_bytes, 8-row groups SBO apart
                u = desc["start"] + (r // 8) * desc["sbo"] + (r % 8) * row_bytes + kk * width
            bits = {128: 3, 64: 2, 32: 1, 16: 0}[row_bytes]
            u ^= ((u >> 7) & ((1 << bits) - 1)) << 4
            lo, hi = min(lo, u), max(hi, u + width)
    return lo, hi


class PTXBounds:
    """One program (CTA) of a straight-line PTX kernel, every thread at once."""

    def __init__(self, ptx: str, shared_bytes: int, warps: int, program: tuple[int, int], params: list):
        self.ptx, self.shared_bytes, self.threads = ptx, shared_bytes, warps * 32
        self.program, self.params = program, params  # params: ("ptr", nbytes) or ("int", value), in order
        self.regs, self.pointers, self.problems, self.checked = {}, {}, [], 0

    def value(self, token: str):
        token = token.strip()
        if token.startswith("%"):
            return self.regs.get(token)
        if token == "global_smem":
            return np.zeros(self.threads, np.uint64)
        if re.fullmatch(r"-?\d+", token):
            return np.full(self.threads, int(token) & (2**64 - 1), np.uint64)
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", token):
            return np.full(self.threads, int(token, 16), np.uint64)
        return None

    def run(self) -> "PTXBounds":
        body = self.ptx[self.ptx.index("{", self.ptx.index(".entry")):]
        self.param_names = re.findall(r"\.param \.\w+(?: \.ptr \.global \.align \d+)? (\w+)", self.ptx)
        body = re.sub(r"//[^\n]*", "", body)
        body = re.sub(r"(?m)^\s*\.(loc|reg|file)\b[^\n]*$", "", body)
        for raw in body.split(";"):
            line = " ".join(raw.replace("{", " { ").replace("}", " } ").split())
            while (m := re.match(r"^(\{|\}|\$L\w+:)\s*", line)):
                line = line[m.end():]
            if line and not line.startswith("."):
                self.step(line)
        return self

    def step(self, line: str) -> None:
        guard = None
        if (m := re.match(r"@(!?)(%p\d+)\s+", line)):
            p = self.regs.get(m.group(2))
            guard = None if p is None else ((p == 0) if m.group(1) else (p != 0))
            line = line[m.end():]
        op, _, args = line.partition(" ")
        kind = op.split(".")[0]
        if kind in ("ld", "st", "stmatrix", "ldmatrix") and "[" in args:
            return self.memory(op, args, guard)
        if kind == "wgmma" and "mma_async" in op:
            return self.wgmma(op, args)
        operands = split_operands(args)
        if not operands:
            return
        dest = operands[0]
        for reg in re.findall(r"%\w+", dest) if dest.startswith("{") else []:
            self.regs[reg] = None
        if dest.startswith("{"):
            return
        result = self.evaluate(op, kind, operands[1:])
        if result is not None and guard is not None:
            old = self.regs.get(dest)
            result = None if old is None else np.where(guard, result, old)
        if result is not None and not dest.startswith("%rd"):
            result = result.astype(np.uint64) & MASK32
        self.regs[dest] = None if result is None else result.astype(np.uint64)

    def evaluate(self, op: str, kind: str, operands: list):
        if kind == "mov":
            source = operands[0]
            if source == "%tid.x":
                return np.arange(self.threads, dtype=np.uint64)
            if source in ("%tid.y", "%tid.z"):
                return np.zeros(self.threads, np.uint64)
            if source.startswith("%ctaid."):
                return np.full(self.threads, dict(x=self.program[0], y=self.program[1]).get(source[-1], 0), np.uint64)
            return self.value(source)
        v = [self.value(x) for x in operands]
        if any(x is None for x in v) or ".f" in op and kind not in ("cvt",):
            return None
        wide_signed = lambda a, b: (signed32(a) * signed32(b)).astype(np.uint64)  # noqa: E731
        table = {
            "add": lambda: v[0] + v[1], "sub": lambda: v[0] - v[1], "neg": lambda: np.uint64(0) - v[0],
            "and": lambda: v[0] & v[1], "or": lambda: v[0] | v[1], "xor": lambda: v[0] ^ v[1],
            "shl": lambda: v[0] << v[1], "selp": lambda: np.where(v[2] != 0, v[0], v[1]),
        }
        if kind in table:
            return table[kind]()
        if kind in ("mul", "mad"):
            product = wide_signed(v[0], v[1]) if (".wide.s32" in op) else v[0] * v[1]
            if ".wide.u32" in op:
                product = (v[0] & MASK32) * (v[1] & MASK32)
            return product + v[2] if kind == "mad" else product
        if kind == "shr":
            if ".s32" in op:
                return (signed32(v[0]) >> v[1].astype(np.int64)).astype(np.uint64)
            return (v[0] if "64" in op else v[0] & MASK32) >> v[1]
        if kind == "bfe":
            x = signed32(v[0]) if ".s32" in op else (v[0] & MASK32).astype(np.int64)
            pos, length = v[1].astype(np.int64), v[2].astype(np.int64)
            bits = (x >> pos) & ((1 << length) - 1)
            if ".s32" in op:
                bits = np.where((bits >> (length - 1)) & 1, bits - (1 << length), bits)
            return bits.astype(np.uint64)
        if kind == "cvt" and (".s64.s32" in op or ".u64.u32" in op):
            return signed32(v[0]).astype(np.uint64) if ".s64.s32" in op else v[0] & MASK32
        if kind == "div" and ".s32" in op:
            a, b = signed32(v[0]), signed32(v[1])
            return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.uint64)
        if kind == "shfl" and (".idx" in op or ".bfly" in op):
            thread = np.arange(self.threads)
            lane = v[1].astype(np.int64) & 31
            return v[0][(thread & ~31) | lane if ".idx" in op else thread ^ lane]
        if kind == "setp" and ".f" not in op:
            a, b = (signed32(v[0]), signed32(v[1])) if ".s32" in op else (v[0], v[1])
            compare = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}
            return compare.get(op.split(".")[1])
        return None

    def memory(self, op: str, args: str, guard) -> None:
        m = re.search(r"\[\s*([%\w]+)\s*(?:\+\s*(-?\d+))?\s*\]", args)
        if op.startswith("ld.param"):
            index = self.param_names.index(m.group(1))
            kind, size = self.params[index]
            base = (index + 1) << 40 if kind == "ptr" else size & 0xFFFFFFFF
            if kind == "ptr":
                self.pointers[index] = (base, size, m.group(1))
            self.regs[split_operands(args)[0]] = np.full(self.threads, base, np.uint64)
            return
        if op.startswith("ld"):
            for reg in re.findall(r"%\w+", args.split("[")[0]):
                self.regs[reg] = None
        space = "shared" if ".shared" in op else "global" if ".global" in op else None
        if space is None:
            return
        address = self.value(m.group(1))
        if address is None:
            self.problems.append(f"{op}: address not computable")
            return
        address = address.astype(np.int64) + int(m.group(2) or 0)
        active = np.ones(self.threads, bool) if guard is None else guard.astype(bool)
        if (v := re.search(r"\.v(\d)\.b(\d+)", op)):
            width = int(v.group(1)) * int(v.group(2)) // 8
        else:
            width = int(re.search(r"\.[bufs](\d+)\b", op).group(1)) // 8
        if op.startswith(("stmatrix", "ldmatrix")):  # lanes 8j..8j+7 give the 16-byte rows of matrix j
            active &= np.arange(self.threads) % 32 < 8 * int(re.search(r"\.x(\d)", op).group(1))
            width = 16
        self.checked += 1
        a = address[active]
        if a.size == 0:
            return
        if (a % width).any():  # tensors and shared memory start 16-byte aligned
            self.problems.append(f"{op}: {width}-byte access misaligned (address {a[a % width != 0][0] % 16} mod 16)")
        if space == "shared":
            if a.min() < 0 or a.max() + width > self.shared_bytes:
                self.problems.append(f"{op}: shared bytes [{a.min()}, {a.max() + width}) of {self.shared_bytes}")
            return
        for base, nbytes, name in self.pointers.values():
            inside = (a >= base) & (a < base + (1 << 40))
            if inside.all():
                r = a - base
                if r.min() < 0 or r.max() + width > nbytes:
                    self.problems.append(f"{op} via {name}: bytes [{r.min()}, {r.max() + width}) of {nbytes}")
                return
        self.problems.append(f"{op}: global address not inside one pointer parameter's tensor")

    def wgmma(self, op: str, args: str) -> None:
        m, n, k = map(int, re.search(r"m(\d+)n(\d+)k(\d+)", op).groups())
        width = 2 if ("bf16" in op or ".f16" in op) else 4
        operands = split_operands(args)[1:]
        a_in_registers = operands[0].startswith("{")
        immediates = operands[2:]
        transposes = [int(x) for x in immediates[-(1 if a_in_registers else 2):]] if width == 2 else [0, 0]
        reads = [("B", operands[1], n, transposes[-1])]
        if not a_in_registers:
            reads.insert(0, ("A", operands[0], m, transposes[0]))
        for name, token, rows, mn_major in reads:
            descriptors = self.value(token)
            self.checked += 1
            if descriptors is None:
                self.problems.append(f"{op} {name}: descriptor not computable")
                continue
            for group, d in enumerate(descriptors[::128]):  # one descriptor per warpgroup
                desc = decode_descriptor(int(d))
                row_elements = (desc["swizzle"] or 16) // width
                for model, r in (("read", rows), ("whole rows", max(rows, row_elements) if mn_major
                                                  else 16 if rows == 8 else rows)):
                    lo, hi = operand_bytes(desc, r, k, width, bool(mn_major))
                    if lo < 0 or hi > self.shared_bytes:
                        self.problems.append(
                            f"m{m}n{n}k{k} {name} ({'N/M' if mn_major else 'K'}-major, {desc['swizzle']}B "
                            f"swizzle, start {desc['start']}) warpgroup {group}, {model}: shared bytes "
                            f"[{lo}, {hi}) of {self.shared_bytes}")


def tiles(shape: Shape) -> dict:
    """``ssd_triton``'s own tile sizes (BLOCK_P, BLOCK_N, ...) for the shape."""
    import torch

    from seqpipe.kernels import ssd_triton

    return ssd_triton._meta(torch.empty(0, dtype=torch.bfloat16), shape.head_dim, shape.d_state, shape.chunk)


def kernel_sources(shape: Shape, dots: str, narrow: str, block_p: int, split_part: str | None):
    """(name, ASTSource, parameters at the shape's sizes, programs on the grid's second axis, warps or None for
    ``--warps``) of the four chunk kernels, or of the dB/dC launch's kernel alone for ``split_part`` "bc"."""
    import triton
    import triton.language as tl

    from seqpipe.kernels import ssd_triton as ssd

    types = {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}
    chunks = triton.cdiv(shape.length, shape.chunk)
    tile = tiles(shape)
    base = dict(T=shape.chunk, BLOCK_N=tile["BLOCK_N"], COMPUTE=tl.float32, PRECISION="tf32", G=1)
    ints = dict(L=shape.length, H=shape.heads, P=shape.head_dim, N=shape.d_state, n_chunks=chunks)
    passed = {k: v for k, v in ints.items() if v != 1}  # the JIT makes an int equal to 1 a constant

    def source(fn, pointers: dict, constants: dict):
        return ast_source(fn, {k: v[0] for k, v in pointers.items()}, ints, constants)

    def sizes(pointers):
        row, chunk_heads = shape.batch * shape.length, shape.batch * chunks * shape.heads
        elements = dict(x=row * shape.heads * shape.head_dim, row=row * shape.heads, head=shape.heads,
                        bc=row * shape.d_state, state=chunk_heads * shape.head_dim * shape.d_state,
                        decay=chunk_heads * shape.chunk, heads_n=row * shape.heads * shape.d_state, part=chunk_heads,
                        splits_n=row * triton.cdiv(shape.heads, ssd.BC_HEADS) * shape.d_state)
        return ([("ptr", elements[e] * (2 if t == "*bf16" else 4)) for t, e in pointers.values()]
                + [("int", v) for v in passed.values()] + [("ptr", 1 << 20)] * 2)

    bf, f = "*bf16", "*fp32"
    passed_states = bf if ssd.PASSED_STATES_16BIT else f  # the chunks' start states and end-state gradients
    dot, narrow_dot = types[dots], types[narrow]
    block_p_all = tile["BLOCK_P"]
    gate = dict(HAS_D=shape.has_d, HAS_Z=shape.has_z)
    state_ptrs = dict(x_ptr=(bf, "x"), dt_ptr=(f, "row"), A_ptr=(f, "head"), B_ptr=(bf, "bc"),
                      states_ptr=(f, "state"), log_decay_ptr=(f, "decay"))
    output_ptrs = dict(x_ptr=(bf, "x"), dt_ptr=(f, "row"), B_ptr=(bf, "bc"), C_ptr=(bf, "bc"), D_ptr=(f, "head"),
                       z_ptr=(bf, "x"), starts_ptr=(passed_states, "state"), log_decay_ptr=(f, "decay"),
                       y_ptr=(bf, "x"))
    state_grad_ptrs = dict(dy_ptr=(bf, "x"), z_ptr=(bf, "x"), C_ptr=(bf, "bc"), log_decay_ptr=(f, "decay"),
                           out_ptr=(f, "state"))
    grad_ptrs = dict(x_ptr=(bf, "x"), dt_ptr=(f, "row"), A_ptr=(f, "head"), B_ptr=(bf, "bc"), C_ptr=(bf, "bc"),
                     D_ptr=(f, "head"), z_ptr=(bf, "x"), starts_ptr=(passed_states, "state"),
                     end_grads_ptr=(passed_states, "state"),
                     log_decay_ptr=(f, "decay"), dy_ptr=(bf, "x"), dx_ptr=(bf, "x"), ddt_ptr=(f, "row"),
                     dB_ptr=(f, "heads_n"), dC_ptr=(f, "heads_n"), dz_ptr=(bf, "x"), dD_ptr=(f, "part"),
                     dA_ptr=(f, "part"))
    grad = dict(base, HAS_Z=shape.has_z, BLOCK_P=block_p, DOT=dot, NARROW_DOT=narrow_dot,
                P_BLOCKS=triton.cdiv(shape.head_dim, block_p))
    rows = shape.batch * shape.heads
    if split_part == "bc":
        bc_ptrs = {k: grad_ptrs[k] for k in ("x_ptr", "dt_ptr", "B_ptr", "C_ptr", "z_ptr", "starts_ptr",
                                             "end_grads_ptr", "log_decay_ptr", "dy_ptr")}
        bc_ptrs.update(dB_ptr=(f, "splits_n"), dC_ptr=(f, "splits_n"))  # (B, L, splits of the one group, N)
        bc_rows = shape.batch * triton.cdiv(shape.heads, ssd.BC_HEADS)
        return [("chunk_grad (bc)", source(ssd._chunk_grad_bc_kernel, bc_ptrs, dict(grad, HEADS=ssd.BC_HEADS)),
                 sizes(bc_ptrs), bc_rows, ssd.BC_WARPS)]
    grad.update(gate, ROUND_TF32=dots == "fp32", WITH_BC=split_part is None)
    return [
        ("chunk_state", source(ssd._chunk_state_kernel, state_ptrs, dict(base, BLOCK_P=block_p_all, DOT=narrow_dot)),
         sizes(state_ptrs), rows, None),
        ("chunk_output", source(ssd._chunk_output_kernel, output_ptrs,
                                dict(base, **gate, BLOCK_P=block_p_all, DOT=dot)), sizes(output_ptrs), rows, None),
        ("chunk_state_grad", source(ssd._chunk_state_grad_kernel, state_grad_ptrs,
                                    dict(base, BLOCK_P=block_p_all, DOT=narrow_dot, HAS_Z=shape.has_z)),
         sizes(state_grad_ptrs), rows, None),
        ("chunk_grad" + (f" ({split_part})" if split_part else ""), source(ssd._chunk_grad_kernel, grad_ptrs, grad),
         sizes(grad_ptrs), rows, None),
    ]


def main() -> None:
    import triton

    from seqpipe.kernels import ssd_triton

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dots", choices=["bf16", "fp16", "fp32"], default="bf16", help="operands (DOT)")
    parser.add_argument("--narrow-dots", choices=["bf16", "fp16", "fp32"], default="fp32",
                        help="operands of the products with an N-wide right operand (NARROW_DOT)")
    parser.add_argument("--split", action="store_true", help="the gradient kernel as two launches")
    parser.add_argument("--passed", choices=["bf16", "fp32"], default=None,
                        help="the dtype of the passed states (default: as ssd_triton.PASSED_STATES_16BIT says)")
    parser.add_argument("--block-p", type=int, default=ssd_triton.GRAD_BLOCK_P, help="the gradient kernel's")
    parser.add_argument("--warps", type=int, default=8)
    for name, default in vars(Shape()).items():
        if not name.startswith("has_"):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--no-z", action="store_true", help="without the gate z (as Mamba2Block calls it)")
    parser.add_argument("--no-d", action="store_true", help="without the skip D")
    args = parser.parse_args()
    if args.passed:
        ssd_triton.PASSED_STATES_16BIT = args.passed == "bf16"
    shape = Shape(args.heads, args.head_dim, args.d_state, args.chunk, args.batch, args.length, not args.no_z,
                  not args.no_d)
    block_p = min(args.block_p, tiles(shape)["BLOCK_P"])  # as ssd_triton's backward caps GRAD_BLOCK_P
    parts = ["x", "bc"] if args.split else [None]
    sources = [s for part in parts for s in kernel_sources(shape, args.dots, args.narrow_dots, block_p, part)]
    sources = list({source[0]: source for source in sources}.values())
    chunks = triton.cdiv(shape.length, shape.chunk)
    print(f"{shape}, dots {args.dots}, narrow dots {args.narrow_dots}, {args.warps} warps, gradient channel "
          f"blocks of {block_p}, passed states {'bf16' if ssd_triton.PASSED_STATES_16BIT else 'fp32'}")
    for name, src, params, rows, warps in sources:
        warps = warps or args.warps
        kernel, registers, spills = compile_sm90(src, warps)
        mma = re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)\.\w+\.(\w+)", kernel.asm["ptx"])
        counts = ", ".join(f"{mma.count(s)} {s[0]}.{s[1]}" for s in sorted(set(mma)))
        shared = kernel.metadata.shared
        over = f" (over sm_90's {SMEM_PER_BLOCK} per block)" if shared > SMEM_PER_BLOCK else ""
        print(f"{name}: {registers} registers, {spills} B spilled, {shared} B shared{over}; {counts}")
        for program in [(0, 0), (chunks - 1, rows - 1), (chunks // 2, 17 % rows)]:
            bounds = PTXBounds(kernel.asm["ptx"], shared, warps, program, params).run()
            print(f"  program {program}: {bounds.checked} accesses, "
                  f"{'in bounds' if not bounds.problems else f'{len(bounds.problems)} problems:'}")
            for problem in dict.fromkeys(bounds.problems):
                print(f"    {problem}")


if __name__ == "__main__":
    main()
