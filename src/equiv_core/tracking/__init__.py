"""Everything MLflow, and the only package that imports it: the store and its runs (``store.py``), every tag and
param key read back (``schema.py``), what ``equiv run`` and ``equiv bench`` log (``run_logging.py``), the spool
of a failed store (``spool.py``), orphaned runs (``orphans.py``) and ``equiv compare`` (``compare.py``).

May import: ``bench``, ``findings``, ``arms``, ``models``, ``config``, ``spec``, ``support`` (for the results it
logs).
"""
