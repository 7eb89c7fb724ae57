"""The findings: the original study's five, the spec findings, the comparisons and coverage map that judge them."""
