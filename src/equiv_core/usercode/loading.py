"""Loading ``FILE.py:NAME`` as Python would run the file: its folder first on ``sys.path`` (and left there, as for a
script), so the helpers beside it import too, at import time or later. A file that raises on import is the user's
fault: their traceback lines come back with one line of ours."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from equiv_core.config.check import UserTarget
from equiv_core.support.errors import UserCodeError, error_line


def user_frames(error: BaseException, path: str | Path) -> tuple[str, ...]:
    """The traceback lines of ``error`` whose frames are in ``path`` (the user's file), as Python prints them."""
    wanted = Path(path).resolve()
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).resolve() == wanted]
    return tuple(line.rstrip("\n") for line in traceback.format_list(frames))


def load_steering(target: UserTarget) -> Callable[..., Any]:
    """The callable ``target.name`` of ``target.path``, the file imported under a module name of its own.

    Raises UserCodeError for a file that raises on import (with the user's traceback lines) and for a name the file
    does not define or that is not callable (naming the callables it does define).
    """
    path = Path(target.path).resolve()
    module_name = "equiv_check_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"{target.path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:  # as when Python runs the file: its folder stays first for the whole run
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's file raises is reported as theirs
        sys.modules.pop(module_name, None)
        hint = " (a script's argument parsing at import?)" if isinstance(error, SystemExit) else ""
        message = f"{target.path} raised on import: {error_line(error)}{hint}"
        raise UserCodeError(message, user_frames(error, path)) from None
    found = getattr(module, target.name, None)
    if found is None or not callable(found):
        callables = sorted(
            name
            for name, value in vars(module).items()
            if callable(value) and not name.startswith("_") and getattr(value, "__module__", None) == module_name
        )
        what = "is not callable" if found is not None else "is not defined there"
        raise UserCodeError(
            f"{target.describe()}: {target.name!r} {what}; callables defined in {target.path}: "
            f"{', '.join(callables) or 'none'}"
        )
    return found  # type: ignore[no-any-return]


def source_line(steer: Callable[..., Any]) -> str:
    """``file:line`` where ``steer`` is defined, for the report ('' when Python cannot tell)."""
    try:
        return f"{inspect.getsourcefile(steer)}:{inspect.getsourcelines(steer)[1]}"
    except (OSError, TypeError):
        return ""
