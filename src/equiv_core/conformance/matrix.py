"""The conformance matrix, defined once: each library environment (its adapter module and its own pins), the
models and the intents. Standard library only: ``noxfile.py`` imports it with nox's own interpreter.

Each environment keeps the default environment's torch, transformers, nnsight and mlflow (constraints.txt) except
where the library needs others: steering-vectors declares ``transformers<5``, repeng ``numpy<2`` (shared NOTES,
"Steering libraries' semantics"), nnterp 1.3 an nnsight before 0.8; so cells differ in the library and what it
forces, nothing else (the versions installed are in each record).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LibraryEnvironment:
    """One environment of the matrix: ``library`` (as the table names it) at ``version``, written by the adapter
    module ``module`` (:mod:`equiv_core.conformance.libraries`), installed as ``requirements`` beside the project
    and the default environment's versions of torch, transformers, nnsight and mlflow, except those that
    ``requirements`` names (``transformers<5``: the library's own constraint decides)."""

    library: str
    version: str
    module: str
    requirements: tuple[str, ...]

    @property
    def id(self) -> str:
        """The environment's id, as nox's session parameter and the record's file name spell it."""
        return f"{self.library}-{self.version}"


ENVIRONMENTS: tuple[LibraryEnvironment, ...] = (
    LibraryEnvironment("nnsight", "0.8.1", "nnsight", ("nnsight==0.8.1",)),
    LibraryEnvironment("nnsight", "0.7.0", "nnsight", ("nnsight==0.7.0",)),
    LibraryEnvironment("nnsight", "0.6.3", "nnsight", ("nnsight==0.6.3",)),
    LibraryEnvironment("transformer-lens", "4.3.0", "transformer_lens_bridge", ("transformer-lens==4.3.0",)),
    LibraryEnvironment("pyvene", "0.1.8", "pyvene", ("pyvene==0.1.8",)),
    LibraryEnvironment(
        "steering-vectors", "0.12.2", "steering_vectors", ("steering-vectors==0.12.2", "transformers<5")
    ),
    LibraryEnvironment("repeng", "0.4.0", "repeng", ("repeng==0.4.0", "numpy<2")),
    # nnterp 1.3.0 imports nnsight.intervention.tracing.globals, gone in nnsight 0.8 (nnterp/utils.py@1.3.0:8)
    LibraryEnvironment("nnterp", "1.3.0", "nnterp", ("nnterp==1.3.0", "nnsight==0.7.0")),
    LibraryEnvironment("lm-eval", "0.4.13", "lm_eval_steered", ("lm-eval[hf]==0.4.13",)),
)

# The offline models of every cell (README, "Models"): the same weights handed to every library.
MODELS = ("tiny-gpt2", "tiny-llama", "smollm2-135m")


def environment(environment_id: str) -> LibraryEnvironment:
    """The environment of that id (ValueError naming the valid ids)."""
    for candidate in ENVIRONMENTS:
        if candidate.id == environment_id:
            return candidate
    raise ValueError(f"no conformance environment {environment_id!r}; valid: {', '.join(e.id for e in ENVIRONMENTS)}")
