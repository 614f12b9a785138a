"""Settings for the whole test session."""

import os

# Triton's interpreter runs its kernels on CPU tensors (tests/samplers/test_triton.py). Set
# before anything imports Triton: torch.optim imports it at the first step of any optimizer,
# and Triton's own library kernels are interpreted only if it is set when they are decorated.
os.environ.setdefault("TRITON_INTERPRET", "1")
