"""What to run, checked without a model and without torch: the catalogue of models, finding ids, arm names and
defaults (``catalog.py``, standard library only: ``noxfile.py`` imports it), what ``equiv run`` and ``equiv bench``
run (``run.py``, ``bench.py``: validated once, into ``ValidRunConfig`` / ``ValidBenchConfig``), decoding, options
declared on config fields (``options.py``), tracking options and the one validator of indices and lengths
(``validation.py``).

May import: ``spec``, ``support``. Never torch, nnsight, transformers or MLflow (``.importlinter``).
"""
