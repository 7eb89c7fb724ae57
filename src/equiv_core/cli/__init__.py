"""The ``equiv`` command line: one module per command, parsing arguments into typed configs; torch-free."""
