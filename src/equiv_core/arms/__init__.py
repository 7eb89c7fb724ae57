"""Every way of steering a model, named by ``config.catalog.ArmName``: the nnsight arms (``nnsight.py``, the one
module that knows nnsight's version differences), the compiled floor (``floor.py``), the independent raw PyTorch
hook reference (``reference.py``); and what they all take: the vocabulary of edits and touches (``steering.py``),
the resolved spec (``resolved.py``, made by ``resolution.py``), steering vectors (``vectors.py``), the model
context (``context.py``, built by ``prepare.py``) and the timed model work (``model_work.py``).

May import: ``models``, ``config``, ``spec``, ``support``.
"""
