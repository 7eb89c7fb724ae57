"""The spec findings, one module each, and the spec run they share."""
