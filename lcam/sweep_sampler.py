"""Moved: the code lives in lcam.model.sweep_sampler; this old path (old configs' _target_s, old imports) is the same module."""
import sys

from lcam.model import sweep_sampler as _moved

sys.modules[__name__] = _moved
