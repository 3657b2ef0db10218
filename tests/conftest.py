import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # shared test helpers such as streaming_checks

# Without a GPU the Triton kernels are tested interpreted. Triton reads this when it is first imported, and
# several libraries import it early (torch.utils.checkpoint among them), so it is set before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
