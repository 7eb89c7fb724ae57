"""Steering specs as researchers write them: op, vector, scale, layers, positions, steps (``steering_spec.py``);
the recipe catalogue (``recipes.py``); a vector file's shape read from its header (``vector_files.py``).

May import: ``support``. Never torch, nnsight, transformers or MLflow (``.importlinter``).
"""
