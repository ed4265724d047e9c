"""Moved: the code lives in lcam.explain.analysis; this old path (old configs' _target_s, old imports) is the same module."""
import sys

from lcam.explain import analysis as _moved

sys.modules[__name__] = _moved
