"""The commands' work, one module per command: check outputs and the tracking store first, run, report, log."""
