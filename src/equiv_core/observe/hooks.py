"""Forward hooks as torch keeps them: switched off while a block is replayed, and counted to find the ones a user's
steering left behind.

Both read torch's per-module hook dicts (``nn.Module._forward_hooks`` and its siblings, stable since torch 2.0) and
the global ones in :mod:`torch.nn.modules.module`; nothing else in the project touches them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn
from torch.nn.modules import module as torch_module

# The per-module attributes that hold forward hooks (torch 2.x nn.Module).
MODULE_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
GLOBAL_HOOK_DICTS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called")


@contextmanager
def suspended_hooks(module: nn.Module) -> Iterator[None]:
    """No forward hook or pre-hook of ``module``, of any module inside it, or registered globally runs inside the
    block; all are back, the same objects, after it (their handles stay valid)."""
    saved: list[tuple[object, str, object]] = []
    owners: list[object] = [*module.modules()]
    try:
        for owner in owners:
            for name in MODULE_HOOK_DICTS:
                if hasattr(owner, name):
                    saved.append((owner, name, getattr(owner, name)))
                    object.__setattr__(owner, name, OrderedDict())
        for name in GLOBAL_HOOK_DICTS:
            if hasattr(torch_module, name):
                saved.append((torch_module, name, getattr(torch_module, name)))
                setattr(torch_module, name, OrderedDict())
        yield
    finally:
        for owner, name, value in reversed(saved):
            if owner is torch_module:
                setattr(torch_module, name, value)
            else:
                object.__setattr__(owner, name, value)


@dataclass(frozen=True, slots=True)
class ModelState:
    """What a model holds besides its weights' values that steering can leave behind: hooks per module, and which
    module object sits at each name (a library that swaps a block for a wrapper must swap it back)."""

    hooks: dict[str, tuple[int, int]]
    modules: dict[str, int]  # name -> id() of the module object

    @classmethod
    def of(cls, model: nn.Module) -> ModelState:
        hooks: dict[str, tuple[int, int]] = {}
        for name, owner in model.named_modules():
            counts = (len(owner._forward_hooks), len(owner._forward_pre_hooks))
            if any(counts):
                hooks[name] = counts
        global_counts = (len(torch_module._global_forward_hooks), len(torch_module._global_forward_pre_hooks))
        if any(global_counts):
            hooks["<global>"] = global_counts
        return cls(hooks, {name: id(owner) for name, owner in model.named_modules()})

    def left_behind(self, before: ModelState) -> list[str]:
        """What this state holds that ``before`` did not, in words: hooks added, modules swapped, added or gone."""
        found = []
        for name, (hooks, pre_hooks) in sorted(self.hooks.items()):
            old_hooks, old_pre = before.hooks.get(name, (0, 0))
            added_counts = ((hooks - old_hooks, "forward hook"), (pre_hooks - old_pre, "forward pre-hook"))
            kinds = [f"{count} {kind}{'s' if count > 1 else ''}" for count, kind in added_counts if count > 0]
            if kinds:
                found.append(f"{' and '.join(kinds)} left registered on {name or 'the model'}")
        swapped = sorted(
            name for name, ident in self.modules.items() if name in before.modules and before.modules[name] != ident
        )
        added = sorted(self.modules.keys() - before.modules.keys())
        gone = sorted(before.modules.keys() - self.modules.keys())
        found += [f"module {name} was replaced and not put back" for name in swapped[:5]]
        found += [f"module {name} was added and not removed" for name in added[:5]]
        found += [f"module {name} is gone" for name in gone[:5]]
        return found
