"""Steering-library conformance: the same intents written in each library's own idiom, observed and judged
against the raw-hook reference (README, "Steering libraries"). One environment per library (``nox -s
conformance``); the adapters are the modules of :mod:`equiv_core.conformance.libraries`."""
