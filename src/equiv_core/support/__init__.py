"""What every job uses and none owns: errors, safe output files, progress lines, text tables, wall time, interrupts."""
