"""Bisection over releases: every change found between neighbouring releases, in about log2(n) environments,
stepping over releases that cannot run; the sweep sees what bisection cannot (a change and its undoing)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from equiv_core.audit.bisect import Bisection, Probe, search
from equiv_core.audit.matrix import sweep_versions

VERSIONS = [f"0.{minor}.0" for minor in range(32)]


def _probe_with(values: dict[str, list[str]], unsupported: frozenset[str] = frozenset()) -> tuple[list[str], object]:
    built: list[str] = []

    def probe(version: str) -> Probe:
        built.append(version)
        if version in unsupported:
            return Probe(version, "unsupported", "install failed: no wheel for this Python", {}, 1.0)
        index = VERSIONS.index(version)
        return Probe(version, "ran", None, {name: series[index] for name, series in values.items()}, 1.0)

    return built, probe


def test_bisection_names_the_two_neighbouring_releases_around_a_change_in_about_log2_n_environments() -> None:
    series = {"m/block_output_form": ["tuple"] * 19 + ["tensor"] * 13, "m/finding.x": ["PASS"] * 32}
    built, probe = _probe_with(series)
    result = search("transformers", VERSIONS, probe)  # type: ignore[arg-type]
    [change] = result.changes
    assert (change.observable, change.before, change.after) == ("m/block_output_form", "tuple", "tensor")
    assert (change.last_before, change.first_after) == ("0.18.0", "0.19.0")
    assert len(built) == len(set(built)) <= 2 + math.ceil(math.log2(len(VERSIONS)))
    assert "changed between transformers 0.18.0 and 0.19.0" in change.sentence("transformers")


def test_every_change_of_every_observable_is_found_and_probes_are_shared() -> None:
    series = {
        "m/pitfall.p": ["raises"] * 30 + ["UNSTEERED without error"] * 2,
        "m/ids": ["a"] * 5 + ["b"] * 20 + ["c"] * 7,
    }
    built, probe = _probe_with(series)
    result = search("nnsight", VERSIONS, probe)  # type: ignore[arg-type]
    found = {(c.observable, c.last_before, c.first_after) for c in result.changes}
    assert found == {("m/ids", "0.4.0", "0.5.0"), ("m/ids", "0.24.0", "0.25.0"), ("m/pitfall.p", "0.29.0", "0.30.0")}
    assert len(built) == len(set(built)) < len(VERSIONS) / 2


def test_releases_that_cannot_run_are_recorded_and_stepped_over() -> None:
    series = {"m/block_output_form": ["tuple"] * 16 + ["tensor"] * 16}
    unsupported = frozenset({"0.0.0", "0.15.0", "0.16.0"})
    built, probe = _probe_with(series, unsupported)
    result = search("transformers", VERSIONS, probe)  # type: ignore[arg-type]
    [change] = result.changes
    assert (change.last_before, change.first_after, change.skipped) == ("0.14.0", "0.17.0", ("0.15.0", "0.16.0"))
    assert {p.version for p in result.unsupported} == unsupported
    assert len(built) == len(set(built))
    assert "(0.15.0, 0.16.0 could not run)" in change.sentence("transformers")


def test_the_sweep_sees_a_change_that_is_undone_where_bisection_cannot() -> None:
    series = {"m/finding.x": ["PASS"] * 10 + ["FAIL"] * 3 + ["PASS"] * 19}
    built, probe = _probe_with(series)
    assert search("nnsight", VERSIONS, probe).changes == ()  # type: ignore[arg-type]
    built.clear()
    sweep = search("nnsight", VERSIONS, probe, mode="sweep")  # type: ignore[arg-type]
    assert [(c.last_before, c.first_after) for c in sweep.changes] == [("0.9.0", "0.10.0"), ("0.12.0", "0.13.0")]
    assert len(built) == len(VERSIONS)


def test_a_bisection_record_reads_back_equal(tmp_path: Path) -> None:
    series = {"m/block_output_form": ["tuple"] * 3 + ["tensor"] * 29}
    _built, probe = _probe_with(series, frozenset({"0.1.0"}))
    result = search("transformers", VERSIONS, probe)  # type: ignore[arg-type]
    assert Bisection.read(result.write(tmp_path / "transformers.json")) == result


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="no nnsight releases to search"):
        search("nnsight", [], lambda version: Probe(version, "ran", None, {}, 0.0))


def test_the_sweep_covers_every_nnsight_release_and_each_transformers_minor_newest_patch() -> None:
    nnsight = ["0.8.1", "0.8.0", "0.5.1", "0.5.0", "0.4.11", "0.3.7", "0.9.0rc1"]
    assert sweep_versions("nnsight", nnsight) == ["0.4.11", "0.5.0", "0.5.1", "0.8.0", "0.8.1"]
    transformers = ["5.10.1", "5.10.0", "5.9.0", "4.57.6", "4.57.1", "4.56.2", "5.0.0"]
    assert sweep_versions("transformers", transformers) == ["4.57.6", "5.0.0", "5.9.0", "5.10.1"]


def test_when_the_newest_release_cannot_run_the_search_ends_at_the_newest_that_can() -> None:
    series = {"m/block_output_form": ["tuple"] * 20 + ["tensor"] * 12}
    built, probe = _probe_with(series, frozenset({"0.31.0", "0.30.0"}))
    [change] = search("transformers", VERSIONS, probe).changes  # type: ignore[arg-type]
    assert (change.last_before, change.first_after) == ("0.19.0", "0.20.0")
    assert len(built) == len(set(built))


def test_a_range_where_no_release_runs_reports_every_probe_and_no_change() -> None:
    built, probe = _probe_with({"m/x": ["a"] * 32}, frozenset(VERSIONS))
    result = search("nnsight", VERSIONS, probe)  # type: ignore[arg-type]
    assert result.changes == () and len(result.unsupported) == len(VERSIONS) == len(set(built))


def test_a_change_and_its_undoing_is_found_when_a_release_probed_for_another_observable_shows_it() -> None:
    """transformers 5.2.0's tiny-gpt2 weights differ from both 4.57.6's and the newest's: the ends agree, but the
    probes made for the block output form (which changed at 5.3.0) land on 5.2.0 and show the difference."""
    series = {
        "m/ids": ["a"] * 14 + ["b"] * 3 + ["a"] * 15,
        "m/block_output_form": ["tuple"] * 17 + ["tensor"] * 15,
    }
    built, probe = _probe_with(series)
    result = search("transformers", VERSIONS, probe)  # type: ignore[arg-type]
    found = {(c.observable, c.before, c.after, c.last_before, c.first_after) for c in result.changes}
    assert found == {
        ("m/block_output_form", "tuple", "tensor", "0.16.0", "0.17.0"),
        ("m/ids", "a", "b", "0.13.0", "0.14.0"),
        ("m/ids", "b", "a", "0.16.0", "0.17.0"),
    }
    assert len(built) == len(set(built))
