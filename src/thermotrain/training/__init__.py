"""The training loop shared by the runner, the Ray backend and users, with its hooks.

See :mod:`.hooks` for the events and the loop state a hook sees.
"""

from .hooks import Batch, Hook

__all__ = ["Batch", "Hook"]
