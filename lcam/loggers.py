"""Moved: the code lives in lcam.runtime.loggers; this old path (old configs' _target_s, old imports) is the same module."""
import sys

from lcam.runtime import loggers as _moved

sys.modules[__name__] = _moved
