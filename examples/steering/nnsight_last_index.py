"""(e) nnsight 0.8: ``h[:, -1] += v`` inside ``tracer.iter[:N]``, meant for the last prompt token. At step 0 index -1
is the last prompt token; with the KV cache every later pass holds one position, so -1 is the newest token. Generate
form. Meant: ``--op add --vector "actadd:I love this|I hate this" --scale 4 --layers 1 --positions -1``: FAILS, it
touches the newest position at every step."""

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
                blocks[1].output[:, -1] += vector
            ids = tracer.result.save()
    return ids
