"""A model ready to steer: loaded offline (``load.py``, ``cache.py``, ``offline_tokenizer.py``), its decoder
layers and block output form (``architecture.py``), prompts as a padded batch (``inputs.py``), determinism
(``determinism.py``) and provenance (``provenance.py``).

May import: ``config``, ``spec``, ``support``.
"""
