"""The commands' work, one module per command (``run``, ``bench``, ``runs``, ``audit``; ``common``: what they
share): check the outputs and the tracking store first, then run, report, write and log.

May import every package below it: ``audit``, ``tracking``, ``bench``, ``findings``, ``arms``, ``models``,
``config``, ``spec``, ``support``.
"""
