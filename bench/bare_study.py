"""The original study's own nnsight calls and nothing else: the floor `equiv run` is measured against.

Run:  .nox/bench/bin/python bench/bare_study.py [--model smollm2-135m]
      .nox/bench/bin/python bench/overhead.py   (this script and `equiv run` side by side, interleaved)

The five findings on the default input (prompt "The weather today is", 5 new tokens, layer 0; finding 1 at the
last layer), written the way a researcher writes them with nnsight 0.8 (a `for` loop over `tracer.iter`), with no
raw-hook reference, no unsteered checks beyond the study's own, no hashing, no report and no MLflow. It checks
nothing: it only prints the ids it generated. The model comes from the same offline loader and cache as `equiv`
(loading is not harness work). Written for the pinned nnsight (0.8.x) and a decoder block that returns a tensor
(transformers 5.x Llama; `bench/AUDIT.md`): the version differences are the harness's job, not this script's.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from nnsight import LanguageModel

from equiv_core.models.load import load_model

PROMPT = "The weather today is"
NEW_TOKENS = 5
LAYER = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    model_name = parser.parse_args().model
    warnings.simplefilter("ignore")  # nnsight's deprecation notes; this script reports ids only
    started = time.perf_counter()
    loaded = load_model(model_name, torch.device("cpu"), "float32")
    lm = LanguageModel(loaded.model, tokenizer=loaded.tokenizer)
    layers = lm.model.layers if hasattr(loaded.model, "model") else lm.transformer.h  # Llama, or GPT-2
    input_ids = loaded.tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False).input_ids
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    n = int(input_ids.shape[1])
    kwargs = {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "pad_token_id": loaded.tokenizer.pad_token_id,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    last = len(layers) - 1
    generated = {}
    with torch.no_grad():
        # Finding 1, position sweep: unsteered, then each prompt position zeroed at the last layer.
        with lm.generate(**kwargs) as tracer:
            with tracer.invoke(inputs):
                result = tracer.result.save()
        generated["unsteered"] = result.sequences[0, n:].tolist()
        for position in range(n):
            with lm.generate(**kwargs) as tracer:
                with tracer.invoke(inputs):
                    layers[last].output[0, position] = 0
                    result = tracer.result.save()
            generated[f"sweep {position}"] = result.sequences[0, n:].tolist()
        # Findings 2 and 3: iter[0] at n-1 (and its full pass), and the plain invoke at -1.
        with lm.generate(**kwargs) as tracer:
            with tracer.invoke(inputs):
                for _step in tracer.iter[0]:
                    layers[LAYER].output[0, n - 1] = 0
                result = tracer.result.save()
        generated["iter0"] = result.sequences[0, n:].tolist()
        full = result.sequences[:, :-1]
        with lm.trace(full, use_cache=False):
            layers[LAYER].output[0, n - 1] = 0
            logits = lm.output.logits.save()
        generated["full pass"] = logits[0, n - 1 :].argmax(-1).tolist()
        with lm.generate(**kwargs) as tracer:
            with tracer.invoke(inputs):
                layers[LAYER].output[0, -1] = 0
                result = tracer.result.save()
        generated["plain"] = result.sequences[0, n:].tolist()
        # Finding 4: every step (iter over all steps) at n-1: with the cache it fails at step 1; without, not.
        try:
            with lm.generate(**kwargs) as tracer:
                with tracer.invoke(inputs):
                    for _step in tracer.iter[0:NEW_TOKENS]:
                        layers[LAYER].output[0, n - 1] = 0
            generated["iter[:] cached"] = "no error"
        except IndexError:
            generated["iter[:] cached"] = "IndexError"
        with lm.generate(**kwargs, use_cache=False) as tracer:
            with tracer.invoke(inputs):
                for _step in tracer.iter[0:NEW_TOKENS]:  # bounded: code after an open iter[:] does not run
                    layers[LAYER].output[0, n - 1] = 0
                result = tracer.result.save()
        generated["recompute"] = result.sequences[0, n:].tolist()
        # Finding 5, steered differs: the plain edit above against the unsteered run (already generated).
    for name, ids in generated.items():
        print(f"{name:>16}: {ids}")
    print(f"bare study: {time.perf_counter() - started:.2f} s after imports")


if __name__ == "__main__":
    main()
