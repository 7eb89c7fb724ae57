"""Everything MLflow: the tracking store, what a run logs, the spool, orphaned runs, ``equiv compare``."""
