"""Moved: the code lives in lcam.model.checkpoint; this old path (old configs' _target_s, old imports) is the same module."""
import sys

from lcam.model import checkpoint as _moved

sys.modules[__name__] = _moved
