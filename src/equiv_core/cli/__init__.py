"""The ``equiv`` command line: ``main.py`` builds the parser and maps each outcome to its exit status; one module
per command (``run``, ``bench``, ``runs``: compare and runs, ``audit``, ``lists``: models and recipes) adds its
options and turns them into the typed config its job takes; most options are declared on the config fields they
fill (:mod:`equiv_core.config.options`), and ``arguments.py`` adds those to a parser and reads them back.

May import: ``config``, ``spec``, ``support`` and ``audit.matrix`` (standard library only: the default reference
cell) at module level; ``jobs`` only inside a command's handler, after parsing. Never torch, nnsight, transformers
or MLflow, directly or through anything it imports at module level (``.importlinter`` checks every import but the
handlers' lazy ones into ``jobs``; ``tests/test_cli.py`` checks that ``equiv --help``, ``models`` and ``recipes``
load none of them): every argument check answers in well under a second.
"""
