"""(a) A raw PyTorch forward hook adding an ActAdd vector to block 1's output at every position of every pass: the
prompt at the prefill, each generated token as it is fed back in. Meant: ActAdd at every position
(``--recipe actadd-all``): holds. On a padded batch (``--prompts``) it adds at the pad positions too, which the
attention mask hides: ``equiv check`` reports them (example h)."""

from collections.abc import Iterator
from contextlib import contextmanager

from actadd import blocks, hidden, love_hate, with_hidden


@contextmanager
def steer(model, tokenizer) -> Iterator[None]:
    vector = love_hate(model, tokenizer, layer=1)
    handle = blocks(model)[1].register_forward_hook(lambda _m, _a, out: with_hidden(out, hidden(out) + vector))
    try:
        yield
    finally:
        handle.remove()
