"""What to run, checked without a model: the catalog of models and defaults, run and bench configs, validation."""
