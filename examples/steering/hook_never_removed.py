"""(f) The hook of example (a), registered on entry and never removed: it steers the generation as meant
(``--recipe actadd-all``) and every generation after it too. ``hooks_removed`` FAILS."""

from collections.abc import Iterator
from contextlib import contextmanager

from actadd import blocks, hidden, love_hate, with_hidden


@contextmanager
def steer(model, tokenizer) -> Iterator[None]:
    vector = love_hate(model, tokenizer, layer=1)
    blocks(model)[1].register_forward_hook(lambda _m, _a, out: with_hidden(out, hidden(out) + vector))
    yield  # the handle is dropped: nothing removes the hook
