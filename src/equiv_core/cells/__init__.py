"""The cells of a matrix (an audit cell, a library's conformance environment) and what runs one: ``cell.py`` says
what a cell is (its pins, models and command), ``runner.py`` runs one in an environment that has its pins (nox's
sessions and Ray's tasks both call it), ``ray_engine.py`` submits a whole matrix to a Ray cluster, one
``runtime_env`` per cell."""
