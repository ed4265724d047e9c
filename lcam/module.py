"""Moved: the code lives in lcam.model.module; this old path (old configs' _target_s, old imports) is the same module."""
import sys

from lcam.model import module as _moved

sys.modules[__name__] = _moved
