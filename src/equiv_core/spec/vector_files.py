"""The shape a steering-vector file holds, read from its header without torch, and the one check of that shape.

``.npy`` (numpy's format header, ``numpy.lib.format``) and ``.safetensors`` (an 8-byte little-endian length, then
a JSON header naming each tensor's dtype and shape: the safetensors format spec) are read without loading the data,
so a vector of the wrong width is refused before the model loads. A ``.pt`` file is a pickle: its shape is known only
after ``torch.load``, right after the model loads (:mod:`equiv_core.arms.vectors`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection
from pathlib import Path

from equiv_core.support.errors import UserInputError


def expected_vector_shapes(hidden: int, n_layers: int) -> str:
    """How the valid shapes are named in every message: ``[hidden]`` or ``[n_layers, hidden]``."""
    return f"[{hidden}] or [{n_layers}, {hidden}] for {n_layers} steered layer{'s' if n_layers > 1 else ''}"


def check_vector_shape(path: str, shape: tuple[int, ...], hidden: int, n_layers: int) -> None:
    """Raise UserInputError unless ``shape`` is ``[hidden]`` or ``[n_layers, hidden]``."""
    if shape not in ((hidden,), (n_layers, hidden)):
        raise UserInputError(
            f"--vector {path!r} has shape {list(shape)}; expected {expected_vector_shapes(hidden, n_layers)}"
        )


def vector_name(names: Collection[str]) -> str | None:
    """Which tensor of a safetensors file is the steering vector: the one named ``vector``, else the only one;
    None when the file holds several and none is named so."""
    if "vector" in names:
        return "vector"
    return next(iter(names)) if len(names) == 1 else None


def header_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of the one tensor a ``.npy`` or ``.safetensors`` file holds (a safetensors file's tensor named
    ``vector`` when it holds several), from its header; None for a ``.pt`` file, or a header this cannot read (the
    full load after the model reports that file in its own words)."""
    try:
        if path.suffix == ".npy":
            import numpy as np

            with path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _fortran_order, _dtype = read(handle)
                return tuple(int(size) for size in shape)
        if path.suffix == ".safetensors":
            with path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > path.stat().st_size - 8:
                    return None  # not a safetensors file: the full load says so in its own words
                header = json.loads(handle.read(length))
            tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
            name = vector_name(tensors)
            return None if name is None else tuple(int(size) for size in tensors[name]["shape"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return None
