"""Steering vectors: load one from a file, draw a seeded random one, or take an ActAdd difference.

Every source resolves to one tensor of shape [n_layers_steered, width] in the model's dtype and on its device (width:
the hidden size at a block's output or input, the edited columns' count at a head site),
row ``i`` for the ``i``-th steered layer in ascending layer order (``--layers 3,1`` gives rows for 1, then 3).
The same tensor is handed to every arm, so arms can differ only in where and when they apply it.

``actadd:A|B`` is the single-vector form of activation addition: the output of decoder block ``l`` (the residual
stream after block ``l``; at another site, that site's tensor) on prompt A minus the same on prompt B, at each
prompt's last token. The paper's form
(Turner et al. 2023, "Activation Addition", arXiv:2308.10248) pads the two prompts to the same length and adds
the whole [tokens, hidden] difference position-aligned at the start of the user's prompt; this single vector is
the common practical variant, added wherever the spec's positions say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from equiv_core.arms.context import SteeringContext
from equiv_core.models.sites import SiteModule, site_hooks
from equiv_core.spec.steering_spec import VectorSource
from equiv_core.spec.vector_files import check_vector_shape, expected_vector_shapes, vector_name
from equiv_core.support.errors import UserInputError


def random_unit_vector(seed: int, hidden_size: int) -> torch.Tensor:
    """A [hidden] float32 unit vector from a seeded standard normal (the global RNG is left alone)."""
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(hidden_size, generator=generator, dtype=torch.float32)
    unit: torch.Tensor = vector / vector.norm()
    return unit


def _last_token_activation(context: SteeringContext, prompt: str, site: SiteModule) -> torch.Tensor:
    """The tensor at ``site`` (the output of a decoder block, by default) at the last token of ``prompt``, its
    edited columns: [width], float32.

    Raises UserInputError for a prompt of no tokens or longer than the model's context.
    """
    input_ids = context.encode(prompt)
    if input_ids.shape[1] == 0:
        raise UserInputError(f"--vector actadd prompt {prompt!r} has no tokens")
    limit = context.architecture.max_positions
    if limit is not None and input_ids.shape[1] > limit:
        raise UserInputError(
            f"--vector actadd prompt is {input_ids.shape[1]} tokens; valid: at most {limit} (the model's context)"
        )
    model: nn.Module = context.loaded.model
    captured: list[torch.Tensor] = []
    columns = list(range(site.width)) if site.columns is None else list(site.columns)

    def keep(tensor: torch.Tensor) -> None:
        captured.append(tensor[0, -1, columns].detach().float())

    with torch.no_grad(), site_hooks(model, [(site, keep)]):
        model(input_ids=input_ids, use_cache=False)
    return captured[0]


def _read_file(path: Path) -> torch.Tensor:
    """The tensor stored in ``path`` (a .safetensors file must hold one tensor, or one named ``vector``)."""
    try:
        if path.suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npy":
            loaded = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            name = vector_name(tensors)
            if name is None:
                raise UserInputError(
                    f"--vector {str(path)!r} holds tensors {sorted(tensors)}; store one, or name it 'vector'"
                )
            loaded = tensors[name]
    except UserInputError:
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure is a file the user gave that cannot be read
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserInputError(f"--vector {str(path)!r}: cannot read it: {type(error).__name__}: {first_line}") from None
    if not isinstance(loaded, torch.Tensor):
        raise UserInputError(f"--vector {str(path)!r} holds a {type(loaded).__name__}; expected one tensor")
    return loaded


def resolve_vectors(source: VectorSource, context: SteeringContext, sites: tuple[SiteModule, ...]) -> torch.Tensor:
    """The steering vectors for the steered layers' ``sites`` (ascending layers): [len(sites), width] in the model's
    dtype, on its device, ``width`` the edited width of the sites (the hidden size for a block's output).

    Raises UserInputError (one line naming what was expected) for a file that cannot be read, of the wrong shape
    or dtype; for a vector that is zero (an ablation direction or an addition of nothing) or not finite in the
    model's dtype (e.g. 1e5 overflows float16).
    """
    widths = {site.edited_width for site in sites}
    if len(widths) != 1:
        raise UserInputError(f"the site has different widths at the steered layers ({sorted(widths)}); steer one")
    [hidden] = widths
    layers = tuple(site.layer for site in sites)
    if source.kind == "random":
        rows = random_unit_vector(source.seed, hidden).expand(len(layers), hidden)
    elif source.kind == "actadd":
        first, second = source.prompts
        rows = torch.stack(
            [
                _last_token_activation(context, first, site) - _last_token_activation(context, second, site)
                for site in sites
            ]
        )
    else:
        rows = _checked_file_vector(Path(source.path), hidden, len(layers))
    cast = rows.to(device=context.device, dtype=context.dtype).contiguous()
    for layer, row in zip(layers, cast, strict=True):
        if not bool(torch.isfinite(row).all()):
            raise UserInputError(
                f"--vector {source.describe()}: the vector for layer {layer} is not finite in {context.dtype}"
            )
        if not bool(row.any()):
            raise UserInputError(
                f"--vector {source.describe()}: the vector for layer {layer} is zero; it has no direction to add, "
                "set or ablate"
            )
    return cast


def _checked_file_vector(path: Path, hidden: int, n_layers: int) -> torch.Tensor:
    tensor = _read_file(path)
    if not tensor.is_floating_point():
        raise UserInputError(
            f"--vector {str(path)!r} has dtype {tensor.dtype}; expected a floating tensor "
            f"{expected_vector_shapes(hidden, n_layers)}"
        )
    check_vector_shape(str(path), tuple(tensor.shape), hidden, n_layers)
    return tensor.expand(n_layers, hidden).float()
