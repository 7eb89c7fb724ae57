"""`equiv run` against the bare study script, side by side: what the harness costs over the study's own calls.

Run:  .nox/bench/bin/python bench/overhead.py [--model smollm2-135m] [--rounds 5]

Each round runs, in alternating order, three fresh processes: `bench/bare_study.py`, `equiv run --no-mlflow` and
`equiv run` logging to a throw-away SQLite MLflow store (created by a warm-up round: a store's one-time set-up,
about 3 s, is not part of every run). It prints the median wall time of each with its 95% CI, the ratios of the
medians, and the time breakdown `equiv run` reports of itself (its last round). Time it on a quiet machine: it
warns when it is not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from equiv_core.bench.statistics import summarize
from equiv_core.support.machine_load import LoadMonitor

HERE = Path(__file__).resolve().parent
EQUIV = [sys.executable, "-m", "equiv_core"]


def _timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description="equiv run against the bare study script")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = f"sqlite:///{scratch}/mlflow.db"
        commands = {
            "bare study": [sys.executable, str(HERE / "bare_study.py"), "--model", options.model],
            "equiv run --no-mlflow": [*EQUIV, "run", "--model", options.model, "--no-mlflow"],
            "equiv run (MLflow)": [*EQUIV, "run", "--model", options.model, "--tracking-uri", store],
        }
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        breakdown = ""
        for command in commands.values():  # warm-up: file cache, model cache, the MLflow store's tables
            _timed(command)
        monitor = LoadMonitor(threads=1)
        for round_index in range(options.rounds):
            order = list(commands) if round_index % 2 == 0 else list(reversed(commands))
            for name in order:
                elapsed, stderr = _timed(commands[name])
                seconds[name].append(elapsed)
                lines = [line for line in stderr.splitlines() if line.startswith("equiv: time:")]
                if lines and name == "equiv run (MLflow)":
                    breakdown = lines[-1].removeprefix("equiv: ")
            print(f"round {round_index + 1}/{options.rounds} done", file=sys.stderr)
        load = monitor.stop()
    bare = summarize(seconds["bare study"]).median_s
    print(f"{options.model}, {options.rounds} rounds, each a fresh process (imports included):")
    for name, values in seconds.items():
        stats = summarize(values)
        print(
            f"  {name:<22} median {stats.median_s:6.2f} s  95% CI [{stats.ci95_low_s:.2f}, {stats.ci95_high_s:.2f}]"
            f"  {stats.median_s / bare:.2f}x the bare study"
        )
    print(f"  equiv run's own account (last round): {breakdown}")
    print(f"  other processes used {load.others_cores:.1f} of {load.cores} cores meanwhile")
    warning = load.warning()
    if warning:
        print(warning)


if __name__ == "__main__":
    main()
