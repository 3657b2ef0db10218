import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # shared test helpers such as streaming_checks

# Without a GPU the Triton kernels are tested interpreted. Triton reads this when it is first imported, and
# several libraries import it early (torch.utils.checkpoint among them), so it is set before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Genomes a test gives as plain gzip are decompressed into a cache: this session's own folder, not the user's
# ~/.cache (seqpipe.data.genome_io.cache_dir). Subprocesses of the CLI tests inherit it.
if "SEQPIPE_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SEQPIPE_CACHE"] = tempfile.mkdtemp(prefix="seqpipe-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SEQPIPE_CACHE"], ignore_errors=True)
