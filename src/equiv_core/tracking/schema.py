"""Every MLflow tag, param and metric key equiv reads back, and the tag sets it compares, declared once (the writers in
:mod:`equiv_core.tracking.run_logging`, :mod:`equiv_core.jobs` and :mod:`equiv_core.audit.cell`; the readers
``equiv compare``, ``equiv runs`` and ``equiv audit-report --tracking-uri``). Other metric names and the per-finding
evidence keys are written only; they are made where they are logged."""

from __future__ import annotations

import enum


class RunKind(enum.StrEnum):
    """What a run is (its :attr:`Tag.KIND`)."""

    RUN = "run"  # equiv run (parent of one FINDING run per finding)
    CHECK = "check"  # equiv check (the same layout as RUN: the user's steering against its intent)
    BENCH = "bench"  # equiv bench (parent of one BENCH_CELL run per arm and size, and of FINDING runs)
    FINDING = "finding"
    BENCH_CELL = "bench-cell"
    AUDIT_CELL = "audit-cell"
    AUDIT_REPORT = "audit-report"
    CONFORMANCE_CELL = "conformance-cell"  # one library environment of the conformance matrix
    CONFORMANCE_REPORT = "conformance-report"


class Tag(enum.StrEnum):
    """Tag keys that are read back, or that MLflow itself reads."""

    KIND = "kind"  # a RunKind
    VERDICT = "verdict"  # a Verdict: PASS / FAIL on a top-level run; a finding's run may also be NOT APPLICABLE ...
    PARENT = "mlflow.parentRunId"  # MLflow's own: the parent of a child run
    # MLflow's UI reads this experiment tag to tell a GenAI experiment (opens on traces) from a model-training one
    # (opens on its runs); MLflow 3.17 picks by its GenAI / Model training switch instead (catalog.RUNS_PAGE).
    EXPERIMENT_KIND = "mlflow.experimentKind"
    OWNER = "equiv.owner"  # host, pid and start time of the process that owns a RUNNING run
    HEARTBEAT = "equiv.heartbeat"  # ms since the epoch, renewed while the owner lives
    END_REASON = "equiv.end_reason"  # why a run was ended FAILED by someone else than its owner
    UPLOADED_FROM = "equiv.uploaded_from"  # the spool directory a run was uploaded from
    MATRIX_TASK = "equiv.matrix_task"  # "<matrix run id>/<cell slug>/<attempt>": the Ray task that ran a cell
    CELL = "cell"  # an audit cell's id, e.g. nnsight='0.7.0'
    ENVIRONMENT = "environment"  # a conformance environment's id, e.g. pyvene-0.1.8
    LIBRARY = "library"  # the steering library a conformance environment checks
    AUDIT_SOURCE = "audit_source"  # "matrix", or the release search an audit cell is a probe of
    STATUS = "status"  # an audit cell's CellStatus; a bench cell's status
    REASON = "reason"  # why an audit cell is unsupported or an error
    MESSAGE = "message"  # a finding's one-line message
    BLOCK_OUTPUT_FORM = "block_output_form"
    ATTN_IMPLEMENTATION = "attn_implementation"
    LAYERS_PATH = "layers_path"
    BASE_MODEL = "base_model"  # the base model a PEFT adapter was loaded on
    ADAPTER = "adapter"  # the PEFT adapter's directory
    FINGERPRINT = "fingerprint"
    FINDINGS_FINGERPRINT = "findings_fingerprint"
    IDS_SHA256 = "ids_sha256"
    LOGITS_SHA256 = "logits_sha256"


class Param(enum.StrEnum):
    """Param keys that are read back (the rest of a run's params mirror its config's fields)."""

    FINDING = "finding"
    ARM = "arm"
    NEW_TOKENS = "new_tokens"
    CELL = "cell"


EXPERIMENT_KIND_TRAINING = "custom_model_development"  # Tag.EXPERIMENT_KIND's value for a model-training experiment
# Set by the Ray engine in a cell's environment: every top-level run the cell opens carries it as Tag.MATRIX_TASK, so
# the driver can end the runs of a task whose worker died (they would stay RUNNING) and find a matrix run's cells.
MATRIX_TASK_ENV = "EQUIV_MATRIX_TASK"
PIN_SUFFIX = "_pin"  # "<package>_pin": the version an audit cell pinned ("latest": the newest)
VERSION_SUFFIX = "_version"  # "<package>_version": the version installed
HASH_SUFFIX = "_sha256"  # "<observable>_sha256": a SHA-256 of token ids or logits bytes


class Metric(enum.StrEnum):
    """Metric names that are read back (the rest are written only)."""

    RATIO_TO_HOOK = "ratio_to_hook"  # a bench cell's median time over the hook's


# Environment fields recorded as tags on every parent run; `equiv compare` names those that differ.
ENVIRONMENT_TAGS = (
    "device",
    "nnsight_version",
    "transformers_version",
    "torch_version",
    "python",
    "cuda",
    "cudnn",
    "gpu_name",
    "git_commit",
    "git_dirty",
    "platform",
    "torch_threads",
    "torch_interop_threads",
    "omp_num_threads",
    "mkl_num_threads",
    "cpu_model",
    "cpu_capability",
    "cpu_count",
    Tag.ATTN_IMPLEMENTATION,
)
# What `equiv compare` shows at the head of each run's column: a parent run's params and tags.
HEADER_TAGS = (
    "model",
    "command",
    "prompt",
    "layer",
    "seed",
    "edit",
    "device",
    "dtype",
    "nnsight_version",
    "transformers_version",
    "torch_version",
    Tag.BLOCK_OUTPUT_FORM,
    Tag.ATTN_IMPLEMENTATION,
    "git_commit",
    Tag.VERDICT,
)
