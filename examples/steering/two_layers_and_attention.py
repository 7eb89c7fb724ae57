"""(g) Steering at two sites of different kinds: ActAdd at block 0's output, and the same kind of vector added to
block 1's attention output projection (``o_proj`` / GPT-2's ``attn.c_proj``), inside the block. The observer
attributes both to their blocks: touches at layers 0 and 1 exactly, every position. Meant (closest spec):
``--op add --vector "actadd:I love this|I hate this" --scale 4 --layers 0,1 --positions all``; the attention-site edit
is not the block-output edit the spec describes, so ``matches_reference`` is expected to fail."""

from collections.abc import Iterator
from contextlib import contextmanager

from actadd import blocks, hidden, love_hate, with_hidden


def attention_output(block):
    """The attention's output projection inside a decoder block (Llama: self_attn.o_proj; GPT-2: attn.c_proj)."""
    return block.self_attn.o_proj if hasattr(block, "self_attn") else block.attn.c_proj


@contextmanager
def steer(model, tokenizer) -> Iterator[None]:
    first, second = love_hate(model, tokenizer, layer=0), love_hate(model, tokenizer, layer=1)
    handles = [
        blocks(model)[0].register_forward_hook(lambda _m, _a, out: with_hidden(out, hidden(out) + first)),
        attention_output(blocks(model)[1]).register_forward_hook(lambda _m, _a, out: out + second),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
