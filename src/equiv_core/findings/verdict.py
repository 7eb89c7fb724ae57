"""What a finding, a run or an audit cell concluded, as one enumeration: the strings in reports, JSON and MLflow
tags are its values."""

from __future__ import annotations

import enum


class Verdict(enum.StrEnum):
    """PASS or FAIL; NOT EXPRESSIBLE (this nnsight release lacks a form the finding needs) and NOT APPLICABLE (this
    input cannot test the finding) neither confirm nor refute it. A run's verdict is PASS or FAIL only."""

    PASS = "PASS"
    FAIL = "FAIL"
    NOT_APPLICABLE = "NOT APPLICABLE"
    NOT_EXPRESSIBLE = "NOT EXPRESSIBLE"
