"""``equiv matrix``: the audit or conformance matrix on a Ray cluster (``pip install 'equiv-bench[cluster]'``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from equiv_core.cli.arguments import AddCommand
from equiv_core.config.options import csv
from equiv_core.support.errors import UserInputError
from equiv_core.support.walltime import CommandStart

MATRICES = ("audit", "conformance", "bench", "sweep-nnsight", "sweep-transformers")
BENCH_ONLY = ("dtypes", "device", "new_tokens")
SHARED_STORES = ("http://", "https://", "postgresql://", "mysql://", "databricks")


def matrix_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.cells.cell import GPU_RECORD, BenchSetting, CellKind
    from equiv_core.config.catalog import BUILTIN_MODEL_INFO, DTYPE_NAMES
    from equiv_core.config.options import csv_ints
    from equiv_core.jobs.matrix import MatrixOptions, matrix_job

    for flag in ("max_running", "threads"):
        if getattr(arguments, flag) < 1:
            raise UserInputError(f"--{flag.replace('_', '-')} {getattr(arguments, flag)}: valid: an integer >= 1")
    uri = arguments.tracking_uri
    if arguments.address is not None and not uri.startswith(SHARED_STORES):
        raise UserInputError(
            f"--tracking-uri {uri!r}: cells on other nodes need a store every node reaches: valid: an MLflow server "
            "(http://HOST:PORT) or a database URI (postgresql://...); a local path only without --address"
        )
    sweep = arguments.matrix.removeprefix("sweep-") if arguments.matrix.startswith("sweep-") else None
    kind = CellKind.AUDIT if sweep else CellKind(arguments.matrix)
    unknown = [model for model in csv(arguments.models) if model not in BUILTIN_MODEL_INFO]
    if unknown:  # a path or hub id of the driver's machine is not on the nodes: built-in models only
        raise UserInputError(f"--models {unknown[0]!r}: valid: the built-in models, {', '.join(BUILTIN_MODEL_INFO)}")
    if sweep and arguments.cells:
        raise UserInputError(f"--cells: {arguments.matrix} runs every release from the package index; drop --cells")
    given = [flag for flag in BENCH_ONLY if getattr(arguments, flag) is not None]
    if given and kind != CellKind.BENCH:
        raise UserInputError(f"--{given[0].replace('_', '-')} sets what `equiv matrix bench` times: valid only there")
    settings: tuple[BenchSetting, ...] = GPU_RECORD
    if kind == CellKind.BENCH and given:
        dtypes = csv(arguments.dtypes or "float32,bfloat16")
        bad = [dtype for dtype in dtypes if dtype not in DTYPE_NAMES]
        if bad or not dtypes:
            raise UserInputError(f"--dtypes {arguments.dtypes!r}: valid: comma-separated {', '.join(DTYPE_NAMES)}")
        try:
            sizes = csv_ints(arguments.new_tokens) if arguments.new_tokens else ()
        except argparse.ArgumentTypeError as error:
            raise UserInputError(f"--new-tokens: {error}") from None
        if any(size < 1 for size in sizes):
            raise UserInputError(f"--new-tokens {arguments.new_tokens!r}: valid: integers >= 1")
        settings = tuple(BenchSetting(dtype, arguments.device or "cuda", sizes) for dtype in dtypes)
    results = Path(arguments.results or f"results/ray/{kind}")  # a sweep writes into results/ray/audit/releases/
    options = MatrixOptions(
        kind,
        arguments.address,
        uri,
        csv(arguments.cells),
        csv(arguments.models),
        results,
        arguments.max_running,
        arguments.threads,
        settings,
        sweep,
    )
    return matrix_job(options)


def add_parser(command: AddCommand) -> None:
    """``equiv matrix`` and its options."""
    parser = command(
        "matrix", "run the audit, conformance or benchmark cells on a Ray cluster, one environment per cell"
    )
    parser.add_argument(
        "matrix",
        choices=MATRICES,
        help="the version audit, the library conformance, the benchmark's (GPU) record, or every release of a package",
    )
    parser.add_argument(
        "--address", default=None, help="the Ray cluster (HOST:6379 or ray://HOST:10001); default: a local Ray"
    )
    parser.add_argument(
        "--tracking-uri",
        required=True,
        help="the MLflow tracking store every cell logs to: a server (http://HOST:5000); any URI without --address",
    )
    parser.add_argument("--cells", default="", help="comma-separated cell ids (default: every cell of the matrix)")
    parser.add_argument("--models", default="", help="comma-separated built-in models (default: the matrix's own)")
    parser.add_argument("--results", default=None, help="directory for the records and report (results/ray/<matrix>)")
    bench = parser.add_argument_group("bench only (default: the GPU record, gpt2-small-random on CUDA)")
    bench.add_argument(
        "--dtypes", default=None, help="comma-separated dtypes, one cell each (default float32,bfloat16)"
    )
    bench.add_argument(
        "--device", default=None, help="the device each bench cell times on (default cuda: one GPU each)"
    )
    bench.add_argument(
        "--new-tokens", default=None, help="comma-separated sizes (default: equiv bench's for the device)"
    )
    parser.add_argument("--max-running", type=int, default=4, help="cells running at once (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each cell process (default 1)")
    parser.set_defaults(handler=matrix_command)
