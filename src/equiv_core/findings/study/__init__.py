"""The original study's five findings, one module each."""
