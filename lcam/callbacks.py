"""Moved: the code lives in lcam.model.callbacks; this old path (old configs' _target_s, old imports) is the same module."""
import sys

from lcam.model import callbacks as _moved

sys.modules[__name__] = _moved
