"""Explaining never changes what the caller passed: modes, ``requires_grad`` flags and hooks come back.

    with borrowed(model):        # inside: eval mode, no parameter requires grad
        maps = explainer(images)
    # after (also after an exception): every module's mode, every flag and every hook as before
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

#: the hook dictionaries of ``nn.Module`` that a call could leave entries in
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")


@contextlib.contextmanager
def borrowed(*modules: nn.Module | None) -> Iterator[None]:
    """Use ``modules`` frozen (eval mode, ``requires_grad=False``) for the block, then restore them exactly.

    Restored on exit, even when the block raises: each submodule's ``training`` flag, each
    parameter's ``requires_grad``, and the hook dictionaries (hooks added during the block are
    removed, hooks removed are put back).
    """
    mods = {id(m): m for root in modules if root is not None for m in root.modules()}
    params = {id(p): p for m in mods.values() for p in m.parameters(recurse=False)}
    modes = {k: m.training for k, m in mods.items()}
    flags = {k: p.requires_grad for k, p in params.items()}
    hooks = {k: {name: dict(getattr(m, name)) for name in _HOOK_DICTS if isinstance(getattr(m, name, None), dict)}
             for k, m in mods.items()}
    try:
        for m in mods.values():
            m.training = False  # eval() without calling overridden train() methods
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for k, m in mods.items():
            m.training = modes[k]
            for name, saved in hooks[k].items():
                current = getattr(m, name)
                current.clear()
                current.update(saved)
        for k, p in params.items():
            p.requires_grad_(flags[k])
