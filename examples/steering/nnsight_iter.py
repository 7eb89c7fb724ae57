"""(c) nnsight 0.8: ActAdd at block 1 inside ``for step in tracer.iter[:N]``, the whole output edited at every
step (the prompt at step 0, the newest token after). Generate form. Meant: ``--recipe actadd-all``: holds."""

from actadd import block_envoys, love_hate
from nnsight import TransformersModel


def steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs):
    vector = love_hate(model, tokenizer, layer=1)
    lm = TransformersModel(model, tokenizer=tokenizer, task="text-generation")
    blocks = block_envoys(lm, model)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with lm.generate(max_new_tokens=max_new_tokens, **generation_kwargs) as tracer:
        with tracer.invoke(inputs):
            for _step in tracer.iter[:max_new_tokens]:
                blocks[1].output[:] += vector
            ids = tracer.result.save()
    return ids
