"""Where a steering site (:class:`equiv_core.spec.steering_spec.Site`) is on a loaded model, what it is there, and
one way to reach its tensor with plain PyTorch hooks.

Module names differ between architectures (Llama ``self_attn.o_proj``, GPT-2 ``attn.c_proj``, BLOOM
``self_attention.dense``), and so does what a sub-layer's output means: BLOOM's attention and MLP modules add the
residual inside themselves (transformers ``modeling_bloom``; nnterp PR #55 found the same on MPT and DBRX), so
their "output" is the residual stream after the sub-layer, not its contribution. :func:`resolve_sites` finds the
modules by their names and *probes* what each site is: whether the tensor carries the block's input through (a shift
of the block's input by a large delta moves it by that delta), and whether a block's input is the previous block's
output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from equiv_core.models.architecture import (
    check_residual_shape,
    forward_with_hooks,
    hidden_states_of,
    text_config,
    with_hidden_states,
)
from equiv_core.spec.steering_spec import Heads, Site
from equiv_core.support.errors import UserInputError

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
OUTPUT_PROJECTION_NAMES = ("o_proj", "c_proj", "out_proj", "dense")
# A site "carries the block's input" when shifting that input by delta moves the site's tensor by delta to within
# this share of |delta|; a sub-layer's own contribution (behind a norm, or a projection) moves by about |delta| or
# by a bounded amount, a share near 1 (measured: 0.00-0.01 on BLOOM, 0.9-1.1 on GPT-2 and Llama, tiny random).
CARRY_LIMIT = 0.1
SHIFT_MULTIPLE = 100.0  # |delta| in multiples of the block input's mean norm

SiteEdit = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True, slots=True)
class SiteModule:
    """A site at one steered block of this model.

    ``path`` is the module's dotted path under the block (``""``: the block itself) and ``full_path`` from the
    model's root; the site is the module's input (its first positional argument, or the ``hidden_states`` keyword)
    where ``reads_input``, else its output (the first element where the output is a tuple). The tensor is
    [batch, seq, ``width``]; ``columns`` are the edited columns of its last dimension (None: all of them).
    ``carry_ratio`` is ``|shift of the site - delta| / |delta|`` for a shift ``delta`` of the block's input (None: not
    probed); ``equals_previous_output``: a block input at block L > 0 is bit for bit block L-1's output (None: not
    probed)."""

    site: Site
    layer: int
    path: str
    full_path: str
    reads_input: bool
    output_is_tuple: bool
    width: int
    columns: tuple[int, ...] | None = None
    heads: tuple[int, ...] = ()
    head_dim: int = 0
    carry_ratio: float | None = None
    equals_previous_output: bool | None = None

    @property
    def edited_width(self) -> int:
        return self.width if self.columns is None else len(self.columns)

    @property
    def residual_added(self) -> bool:
        """The tensor carries the block's input through: it is the residual stream after the sub-layer."""
        return self.carry_ratio is not None and self.carry_ratio < CARRY_LIMIT

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "module": self.full_path,
            "reads": "input" if self.reads_input else "output",
            "width": self.width,
            "heads": list(self.heads),
            "head_dim": self.head_dim,
            "carry_ratio": self.carry_ratio,
            "residual_added": self.residual_added,
            "equals_previous_output": self.equals_previous_output,
        }


def _child(block: nn.Module, names: tuple[str, ...], what: str, site: Site) -> str:
    for name in names:
        if isinstance(getattr(block, name, None), nn.Module):
            return name
    children = [name for name, _ in block.named_children()]
    raise UserInputError(
        f"--site {site.describe()}: no {what} module among {type(block).__name__}'s children {children}; name one "
        "with --site module:PATH"
    )


def _path_under_block(block: nn.Module, site: Site) -> str:
    if site.kind in ("block-output", "block-input"):
        return ""
    if site.kind == "attention-output":
        return _child(block, ATTENTION_NAMES, "attention", site)
    if site.kind == "mlp-output":
        return _child(block, MLP_NAMES, "MLP", site)
    if site.kind == "head-input":
        attention = _child(block, ATTENTION_NAMES, "attention", site)
        projection = _child(
            block.get_submodule(attention), OUTPUT_PROJECTION_NAMES, "attention output projection", site
        )
        return f"{attention}.{projection}"
    try:
        block.get_submodule(site.path)
    except AttributeError:
        children = [name for name, _ in block.named_modules() if name][:40]
        raise UserInputError(
            f"--site {site.describe()}: {type(block).__name__} has no module {site.path!r}; its modules: {children}"
        ) from None
    return site.path


def _input_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        raise UserInputError("the site module's first input is not a tensor (no hidden_states argument)")
    return hidden


@contextmanager
def site_hooks(model: nn.Module, edits: list[tuple[SiteModule, SiteEdit]]) -> Iterator[None]:
    """Plain PyTorch hooks, one per ``(site, edit)``: a forward pre-hook (with keyword arguments) for an input site,
    a forward hook for an output site. Each calls ``edit`` with the site's tensor [batch, seq, width] (another rank
    raises :class:`~equiv_core.models.architecture.UnsupportedArchitecture`); a tensor it returns replaces the
    site's tensor (in the output's tuple, or as the first argument), None leaves it."""
    handles = []
    for site, edit in edits:
        module = model.get_submodule(site.full_path)
        if site.reads_input:

            def pre_hook(
                _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], edit: SiteEdit = edit
            ) -> Any:
                hidden = _input_tensor(args, kwargs)
                check_residual_shape(tuple(hidden.shape))
                new = edit(hidden)
                if new is None:
                    return None
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:

            def hook(_module: nn.Module, _args: Any, output: Any, edit: SiteEdit = edit) -> Any:
                new = edit(hidden_states_of(output))
                return None if new is None else with_hidden_states(output, new)

            handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _heads(model: nn.Module, heads: Heads, width: int, site: Site) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    config = text_config(model)
    count = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    if not count or width % int(count):
        raise UserInputError(
            f"--heads at --site {site.describe()}: the tensor's width {width} is not a whole number of the config's "
            f"{count} heads"
        )
    head_dim = width // int(count)
    chosen = heads.resolve(int(count))
    columns = tuple(column for head in chosen for column in range(head * head_dim, (head + 1) * head_dim))
    return chosen, head_dim, columns


def resolve_sites(
    model: nn.Module,
    layers_path: str,
    layers: tuple[int, ...],
    site: Site,
    heads: Heads | None,
    probe_ids: torch.Tensor,
) -> tuple[SiteModule, ...]:
    """``site`` at each of ``layers`` (absolute) of ``model``, whose blocks are at ``layers_path``, probed with one
    unsteered forward of ``probe_ids`` ([1, seq]) and, for sub-layer and module outputs of the residual width, one
    forward with the blocks' inputs shifted (the carry probe).

    Raises UserInputError (one line) for a module the model lacks, a site tensor that is not [batch, seq, width],
    or heads that do not divide its width.
    """
    found = []
    for layer in layers:
        block = model.get_submodule(f"{layers_path}.{layer}")
        path = _path_under_block(block, site)
        full_path = f"{layers_path}.{layer}" + (f".{path}" if path else "")
        found.append(SiteModule(site, layer, path, full_path, site.reads_input, False, 0))
    calls = _probe_calls(model, found, probe_ids)
    resolved = []
    for entry in found:
        call = calls.get(entry.layer)
        where = f"--site {site.describe()} at layer {entry.layer}: {entry.full_path}"
        if call is None:
            raise UserInputError(f"{where} did not run in a forward pass")
        if call.count != 1:
            raise UserInputError(f"{where} runs {call.count} times in one forward pass; a site must run once a pass")
        if entry.reads_input and not call.positional:
            raise UserInputError(
                f"{where} receives no hidden states as its first argument (positional, or the keyword "
                "hidden_states), which is what an input site edits and what nnsight's .input is"
            )
        tensor = call.tensor
        if not isinstance(tensor, torch.Tensor):
            raise UserInputError(f"{where}'s {'input' if entry.reads_input else 'output'} is a {type(tensor).__name__}")
        if tensor.dim() != 3 or tuple(tensor.shape[:2]) != (1, probe_ids.shape[1]):
            raise UserInputError(
                f"{where}'s {'input' if entry.reads_input else 'output'} has shape {list(tensor.shape)}, not "
                "[batch, seq, width]"
            )
        width = int(tensor.shape[-1])
        chosen, head_dim, columns = _heads(model, heads, width, site) if heads is not None else ((), 0, None)
        resolved.append(
            SiteModule(
                site,
                entry.layer,
                entry.path,
                entry.full_path,
                entry.reads_input,
                call.output_is_tuple,
                width,
                columns,
                chosen,
                head_dim,
            )
        )
    return _probed(model, layers_path, tuple(resolved), probe_ids)


@dataclass(slots=True)
class _ProbedCall:
    """What one site module did in the probe's forward pass."""

    count: int = 0
    positional: bool = False  # its first argument is the hidden states (positional, or the keyword first)
    tensor: Any = None  # the site's tensor (first argument, or the output / its first element)
    output_is_tuple: bool = False


def _probe_calls(model: nn.Module, sites: list[SiteModule], probe_ids: torch.Tensor) -> dict[int, _ProbedCall]:
    """Per steered layer, how its site module was called in one unsteered forward pass of ``probe_ids``."""
    calls: dict[int, _ProbedCall] = {site.layer: _ProbedCall() for site in sites}
    handles = []
    for site in sites:
        call = calls[site.layer]

        def before(
            _module: nn.Module,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            call: _ProbedCall = call,
            reads_input: bool = site.reads_input,
        ) -> None:
            call.count += 1
            # The hooks read the first positional argument, or the keyword hidden_states; nnsight's .input is the
            # first argument, positional or else the first keyword: they agree when either comes first.
            first_keyword = next(iter(kwargs), None)
            call.positional = (bool(args) and isinstance(args[0], torch.Tensor)) or (
                not args and first_keyword == "hidden_states"
            )
            if reads_input and call.tensor is None:
                call.tensor = args[0] if args else kwargs.get("hidden_states")

        def after(
            _module: nn.Module, _args: Any, output: Any, call: _ProbedCall = call, reads_input: bool = site.reads_input
        ) -> None:
            if not reads_input and call.count == 1:
                call.output_is_tuple = isinstance(output, tuple)
                call.tensor = output[0] if isinstance(output, tuple) else output

        module = model.get_submodule(site.full_path)
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after))
    forward_with_hooks(model, probe_ids, handles)
    return calls


def _probed(
    model: nn.Module, layers_path: str, sites: tuple[SiteModule, ...], probe_ids: torch.Tensor
) -> tuple[SiteModule, ...]:
    """The sites with what they are on this model: the carry probe for sub-layer and module outputs of the block
    input's width; for a block input after block 0, whether it is the previous block's output bit for bit."""
    probed = []
    for site in sites:
        block_input = _block_site(layers_path, site.layer, reads_input=True)
        if site.site.kind == "block-input" and site.layer > 0:
            previous = _block_site(layers_path, site.layer - 1, reads_input=False)
            site = replace(
                site, equals_previous_output=_equals_previous_output(model, previous, block_input, probe_ids)
            )
        elif site.path and not site.reads_input:
            site = replace(site, carry_ratio=_carry_ratio(model, block_input, site, probe_ids))
        probed.append(site)
    return tuple(probed)


def _block_site(layers_path: str, layer: int, reads_input: bool) -> SiteModule:
    """Block ``layer``'s input or output as a site, for the probes' hooks."""
    site = Site("block-input") if reads_input else Site("block-output")
    return SiteModule(site, layer, "", f"{layers_path}.{layer}", reads_input, False, 0)


def _equals_previous_output(
    model: nn.Module, previous: SiteModule, block_input: SiteModule, probe_ids: torch.Tensor
) -> bool:
    """Whether a block receives exactly what the previous block outputs (bit for bit) in one forward of
    ``probe_ids``."""
    seen: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> None:
        seen.append(tensor.detach().clone())

    with torch.no_grad(), site_hooks(model, [(previous, keep), (block_input, keep)]):
        model(input_ids=probe_ids, use_cache=False)
    return bool(torch.equal(seen[0], seen[1]))


def _carry_ratio(model: nn.Module, block_input: SiteModule, site: SiteModule, probe_ids: torch.Tensor) -> float | None:
    """``|shift of the site's tensor - delta| / |delta|`` when the block's input is shifted by ``delta`` (a seeded
    random direction, :data:`SHIFT_MULTIPLE` times the input's mean norm) at every position; None where the site's
    width is not the block input's, or the shifted pass is not finite."""
    captured: list[torch.Tensor] = []
    shift: list[torch.Tensor] = []

    def capture(tensor: torch.Tensor) -> None:
        captured.append(tensor.detach().float().clone())

    def shifted(hidden: torch.Tensor) -> torch.Tensor | None:
        if hidden.shape[-1] != site.width:
            return None
        generator = torch.Generator().manual_seed(0)
        direction = torch.randn(hidden.shape[-1], generator=generator)
        direction = direction / direction.norm()
        norms = hidden.detach().float().norm(dim=-1)
        norms = norms[:, 1:] if hidden.shape[1] > 1 else norms
        size = SHIFT_MULTIPLE * float(norms.mean())  # the first token (an attention sink) left out, as in norms
        delta = (size * direction).to(hidden.dtype).to(hidden.device)
        shift.append(delta.float().cpu())
        moved: torch.Tensor = hidden + delta
        return moved

    with torch.no_grad():
        with site_hooks(model, [(site, capture)]):
            model(input_ids=probe_ids, use_cache=False)
        with site_hooks(model, [(block_input, shifted), (site, capture)]):
            model(input_ids=probe_ids, use_cache=False)
    if not shift:
        return None
    moved = (captured[1] - captured[0]).cpu()
    delta = shift[0].expand_as(moved)
    ratio = float((moved - delta).norm() / delta.norm())
    return ratio if math.isfinite(ratio) else None
