"""`equiv check` against the user's bare generation: what checking a piece of steering code costs over running it.

Run:  .nox/bench/bin/python bench/check_overhead.py [--model smollm2-135m] [--new-tokens 32] [--rounds 7]

The model is loaded once (a user checks the model they already have); then each round times, in alternating
order, (1) the user's steering alone: example (a), `examples/steering/hook_every_pass.py`, entered around a plain
HF `generate` (its ActAdd vector computed inside, as in the check), (2) the whole check (`run_user`: unsteered,
the raw-hook reference, the user's generation observed, the replay of every block call, unsteered after) and (3)
the check of `coverage` alone (`equiv check --only coverage`: the user's generation and the replay). It prints the
median of each, the paired ratios with their CI, where the check's time went (its own account, median per phase)
and the memory the observer held. Time it on a quiet machine: it warns when it is not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from equiv_core.arms.prepare import prepare_run
from equiv_core.arms.resolution import resolve_spec
from equiv_core.arms.steering import generation_kwargs
from equiv_core.bench.statistics import ci_label, summarize, summarize_ratios
from equiv_core.config.check import UserTarget
from equiv_core.config.decoding import GREEDY
from equiv_core.findings.user.user_run import CheckCost, UserRun, run_user
from equiv_core.models.inputs import encode_prompts
from equiv_core.spec.recipes import RECIPES
from equiv_core.support.machine_load import LoadMonitor
from equiv_core.usercode.forms import load_user_steering

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "steering" / "hook_every_pass.py"


def main() -> None:
    parser = argparse.ArgumentParser(description="equiv check against the user's bare generation")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    context = prepare_run(options.model).context
    model, tokenizer = context.loaded.model, context.loaded.tokenizer
    batch = encode_prompts(tokenizer, ("The weather today is",), context.device)
    resolved = resolve_spec(RECIPES.get("actadd-all").spec(), context, batch, options.new_tokens, GREEDY)
    steering = load_user_steering(UserTarget(str(EXAMPLE), "steer"))
    kwargs = generation_kwargs(options.new_tokens, tokenizer.pad_token_id, True)

    def bare() -> None:
        with steering.steer(model, tokenizer), torch.no_grad():
            model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)

    def quiet(_line: str) -> None:
        pass

    costs: list[CheckCost] = []
    arms = {
        "user's generation": bare,
        "equiv check": lambda: costs.append(_cost(run_user(context, resolved, steering, quiet))),
        "equiv check --only coverage": lambda: run_user(context, resolved, steering, quiet, frozenset()),
    }
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for work in arms.values():  # warm-up
        work()
    costs.clear()
    monitor = LoadMonitor(threads=torch.get_num_threads())
    for round_index in range(options.rounds):
        order = list(arms) if round_index % 2 == 0 else list(reversed(arms))
        for name in order:
            started = time.perf_counter()
            arms[name]()
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_index + 1}/{options.rounds} done", file=sys.stderr)
    load = monitor.stop()
    base = seconds["user's generation"]
    label = ci_label(options.rounds)
    print(f"{options.model}, {options.new_tokens} new tokens, {options.rounds} paired rounds (model loaded once):")
    for name, values in seconds.items():
        stats = summarize(values)
        ratio = summarize_ratios([mine / theirs for mine, theirs in zip(values, base, strict=True)])
        print(
            f"  {name:<28} median {stats.median_s:6.2f} s   {ratio.median:4.2f}x the user's generation "
            f"({label} CI {ratio.ci95_low:.2f}-{ratio.ci95_high:.2f})"
        )
    median = {field: statistics.median(getattr(cost, field) for cost in costs) for field in CheckCost.__slots__}
    phases = ", ".join(
        f"{field.removesuffix('_s')} {value:.2f} s" for field, value in median.items() if field != "observer_bytes"
    )
    print(f"  the check's own account (median per phase): {phases}")
    print(f"  the observer held {median['observer_bytes'] / 2**20:.1f} MiB until the replay")
    print(f"  other processes used {load.others_cores:.1f} of {load.cores} cores meanwhile")
    warning = load.warning()
    if warning:
        print(warning)


def _cost(run: UserRun) -> CheckCost:
    assert run.cost is not None
    return run.cost


if __name__ == "__main__":
    main()
