"""What differs between nnsight releases, read once from the installed version: the constants every nnsight arm
(:mod:`equiv_core.arms.nnsight`, :mod:`equiv_core.arms.nnsight_graph`) and the audit's probes branch on. The facts
are from the release sweeps (shared NOTES)."""

from __future__ import annotations

from typing import Any, Literal

import nnsight
from packaging.version import Version

from equiv_core.config.catalog import MIN_RELEASE

NNSIGHT_VERSION = Version(nnsight.__version__)
# The oldest release the arms drive (config.catalog.MIN_RELEASE says why).
MIN_SUPPORTED = Version(MIN_RELEASE["nnsight"])
# Before 0.5 a trace's code builds a graph of proxies (nnsight 0.5.0 release notes: tracing rewritten to run the
# trace's code as Python; checked on 0.4.11, shared NOTES 2026-12-07): those releases have arms of their own
# (arms.nnsight_graph).
GRAPH_API = Version("0.5.0") > NNSIGHT_VERSION
# Keyword arguments of every trace: 0.4's default debug mode prints an error's traceback itself and sets
# sys.tracebacklimit = 0 for the whole process (nnsight/tracing/backends/base.py of 0.4.11).
TRACE_OPTIONS: dict[str, Any] = {"debug": False} if GRAPH_API else {}
# The generated ids inside a generation trace: `tracer.result` from 0.5.8, `generator.output` before (NOTES).
TRACER_RESULT = Version("0.5.8") <= NNSIGHT_VERSION
# 0.5 has only the with-block form of iter (the body runs once per step); 0.6 added the for-loop form and
# deprecated the with-block; 0.8 replaced LanguageModel with TransformersModel.
LOOP_ITER = Version("0.6.0") <= NNSIGHT_VERSION
TRANSFORMERS_MODEL = Version("0.8.0") <= NNSIGHT_VERSION


# How an nnsight arm writes a steering spec: a plain invoke, the spec's step selector, or the step selector over
# every step without the KV cache (edits translated to absolute positions, re-applied at every step).
SpecStyle = Literal["plain", "iter", "recompute"]
