"""The showdown's measuring side: the pure functions, and one real measuring process (the engine on
the tabular project, a few seconds)."""

from __future__ import annotations

import json
import sys

import pytest

from gradschool import projects
from gradschool.practice import showdown


def test_compare_ratios_and_competition_ranks():
    table = showdown.compare({"a": 3.0, "b": 1.0, "c": 1.0, "d": 2.0})
    assert [cell["rank"] for cell in table.values()] == [4, 1, 1, 3]
    assert table["a"]["ratio"] == pytest.approx(3.0)
    up = showdown.compare({"a": 0.5, "b": 1.0}, higher_is_better=True)
    assert up["a"] == {"value": 0.5, "ratio": 2.0, "rank": 2}
    with pytest.raises(ValueError):
        showdown.compare({"a": 0.0})


def test_epoch_stats_uses_the_median_after_the_first():
    stats = showdown.epoch_stats([5.0, 1.0, 1.5, 4.0])
    assert stats == pytest.approx({"per_epoch": 1.5, "first_extra": 3.5, "spread": 2.0})
    with pytest.raises(ValueError):
        showdown.epoch_stats([1.0])


def test_parse_result_takes_the_last_mark_line_and_validates_it():
    good = {key: (1.0 if kind == showdown.NUMBER else kind()) for key, kind in showdown.SCHEMA.items()}
    good.update(framework="torch", epochs=2, threads=1)
    earlier = showdown.MARK + json.dumps(dict(good, epochs=1))
    stdout = "noise\n" + earlier + "\n" + showdown.MARK + json.dumps(good)
    assert showdown.parse_result(stdout, "torch") == good
    with pytest.raises(ValueError, match="first_loss"):
        showdown.parse_result(showdown.MARK + json.dumps(dict(good, first_loss=float("nan"))), "torch")
    with pytest.raises(ValueError):
        showdown.parse_result(showdown.MARK + json.dumps(good), "jax")


def test_run_child_reports_the_exit_status_and_stderr():
    with pytest.raises(showdown.ChildError, match="exited with status 3"):
        showdown.run_child([sys.executable, "-c", "import sys; sys.exit(3)"], timeout=30)
    with pytest.raises(showdown.ChildError, match="timed out"):
        showdown.run_child([sys.executable, "-c", "import time; time.sleep(10)"], timeout=1)


def test_a_real_measuring_process_solves_the_reference_problem():
    results = showdown.measure_all([("engine",)], project="tabular", epochs=2)
    result = results["engine"]
    assert len(result["epoch_seconds"]) == 2
    showdown.same_problem(results, projects.load("tabular").reference().loss)
    assert result["exports"]["npz (np.savez)"]["ok"]
    assert result["lines"]["train"] > 0 and result["peak_rss_mb"] > 0
