"""(d) nnsight 0.8: ActAdd at block 1 in a plain ``tracer.invoke``, meant for every token. A plain invoke fires once,
on the prompt pass; generated tokens see the edit only through the KV cache. Generate form. Meant:
``--recipe actadd-all``: FAILS, step 0 only."""

from actadd import block_envoys, love_hate
from nnsight import TransformersModel


def steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs):
    vector = love_hate(model, tokenizer, layer=1)
    lm = TransformersModel(model, tokenizer=tokenizer, task="text-generation")
    blocks = block_envoys(lm, model)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with lm.generate(max_new_tokens=max_new_tokens, **generation_kwargs) as tracer:
        with tracer.invoke(inputs):
            blocks[1].output[:] += vector
            ids = tracer.result.save()
    return ids
