#!/bin/bash
# Issue #16 in one device call: the kernel tests compiled on the GPU, then bench/gpu_peers.py (the peer table,
# SSD variants, 131k pre-training steps, Mamba-1 tiles, kernel profile). Run from the repository root of the
# device machine with the bundle in $G (this repository's files, its seqpipe wheel and the einops wheel in
# $G/wheels, mamba_ssm's sdist) and the wheels of the packages the machine lacks under .whl/; logs go to $OUT.
# TILES and M1_TILES (environment) replace the variants timed; ARGS, the timed run's other options (--profile).
G=${G:-$PWD/.gpu_kernels}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*/*.whl \
    "$G"/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton_cache
SDIST="$G/mamba_ssm-2.2.4.tar.gz"
TILES=${TILES:-"64x4fhs 64x8f"}
M1_TILES=${M1_TILES-"16:8x1x4/8x4x16/4x1x8 16:8x1x4/8x4x16/4x1x16"}
ARGS=${ARGS-"--profile"}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; date -u;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
                                           'cuda', torch.version.cuda)"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
# 1. tests (from outside the checkout, so that `seqpipe` is the installed package) while 12 processes compile
#    mamba_ssm's autotune configs and one compiles our variants into the shared Triton cache; each under a
#    timeout, so that a hang cannot eat the call
cp -r "$G/tests" /tmp/tests && cp "$G/pyproject.toml" /tmp/pyproject.toml
(cd /tmp && timeout 300 python3 -m pytest -q -c /tmp/pyproject.toml --rootdir /tmp tests/kernels/test_ssd.py \
    tests/test_mamba2.py tests/kernels/test_selective_scan.py > "$OUT/tests.log" 2>&1; echo "pytest exit $?" >> "$OUT/tests.log") &
for i in $(seq 0 11); do
    timeout 240 python3 "$G/bench/gpu_peers.py" --sdist "$SDIST" --warm-peer "$i" 12 > "/tmp/warm_peer_$i.log" 2>&1 &
done
timeout 240 python3 "$G/bench/gpu_peers.py" --sdist "$SDIST" --warm-ours --ssd-tiles $TILES --mamba1-tiles $M1_TILES \
    > "$OUT/warm_ours.log" 2>&1 &
wait
echo "warm-up and tests done at $(date -u +%T)"; tail -4 "$OUT/tests.log"; tail -n 2 /tmp/warm_peer_*.log | tail -n 8
cat /tmp/warm_peer_*.log > "$OUT/warm_peer.log"
# 2. the timed run, alone on the GPU
python3 "$G/bench/gpu_peers.py" --sdist "$SDIST" --ssd-tiles $TILES --mamba1-tiles $M1_TILES $ARGS 2>&1 \
    | tee "$OUT/table.log"
grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
