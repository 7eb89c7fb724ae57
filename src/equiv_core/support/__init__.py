"""What every job uses and none owns: errors and exit statuses, safe output files, progress lines and the machine's
load, plain-text tables, the wall-time breakdown, deferred interrupts, a small registry.

May import: nothing of equiv_core.
"""
