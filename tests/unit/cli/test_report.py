"""Saved runs and the HTML report, without a browser (the e2e test loads it in Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentflow.report as report
from agentflow.dsl import Event
from agentflow.errors import ConfigError
from agentflow.report import RunRecord, list_runs, load_run, render_report, save_run, spans_of

T0 = 1_700_000_000.0
TRACE = (
    Event("step.start", "p", T0),
    Event("step.start", "p/a", T0 + 0.1),
    Event("tool.call", "p/a", T0 + 0.3, {"tool": "lookup", "started": T0 + 0.1, "seconds": 0.2, "ok": True}),
    Event("step.end", "p/a", T0 + 0.3, {"ok": True, "seconds": 0.2}),
    Event("step.start", "p/b", T0 + 0.3),
    Event(
        "llm.call",
        "p/b",
        T0 + 1.3,
        {
            "engine": "e<1>",
            "prompt_tokens": 100,
            "cached_tokens": 75,
            "completion_tokens": 9,
            "started": T0 + 0.3,
        },
    ),
    Event("step.end", "p/b", T0 + 1.3, {"ok": False, "seconds": 1.0, "error": "StepError"}),
    Event("step.end", "p", T0 + 1.3, {"ok": False, "seconds": 1.3}),
)


def _record(ok: bool = True) -> RunRecord:
    return RunRecord(
        run_id="r-1",
        plan="demo <plan>",
        engine="test",
        started=T0,
        finished=T0 + 1.4,
        ok=ok,
        inputs={"topic": "tea & <b>"},
        value={"answer": "<script>alert(1)</script>"} if ok else None,
        error=None if ok else "p/b: step raised ValueError: <bad>",
        trace=TRACE,
    )


def test_exports_match_all() -> None:
    public = {n for n in dir(report) if not n.startswith("_")} - {"annotations"}
    assert set(report.__all__) == public


def test_spans_pair_steps_and_time_llm_and_tool_calls() -> None:
    spans = spans_of(TRACE)
    by = {(s.kind, s.path): s for s in spans}
    assert by[("step", "p/a")].start == T0 + 0.1 and by[("step", "p/a")].end == T0 + 0.3
    assert by[("tool", "p/a")].end == pytest.approx(T0 + 0.3)
    assert by[("llm", "p/b")].start == T0 + 0.3 and by[("llm", "p/b")].end == T0 + 1.3
    assert by[("step", "p/b")].ok is False
    assert spans[0].path == "p"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = save_run(_record(), tmp_path)
    assert path == tmp_path / "r-1.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["type"] == "run" and rows[-1]["type"] == "result" and len(rows) == len(TRACE) + 2
    loaded = load_run("r-1", tmp_path)
    assert loaded == _record()
    assert load_run(str(path)).run_id == "r-1"
    assert load_run("latest", tmp_path).run_id == "r-1"
    assert list_runs(tmp_path) == [path]


def test_load_run_explains_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no saved runs"):
        load_run("latest", tmp_path)
    (tmp_path / "x.jsonl").write_text('{"type": "event"}\n')
    with pytest.raises(ConfigError, match="not a saved run"):
        load_run("x", tmp_path)
    with pytest.raises(ConfigError, match="no saved run 'nope'"):
        load_run("nope", tmp_path)


def test_save_run_rejects_ids_that_are_not_file_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot name a file"):
        save_run(RunRecord("../x", "p", "e", T0, T0, True), tmp_path)


def test_report_shows_usage_cache_hit_rate_and_escapes_everything() -> None:
    html = render_report(_record())
    assert html.startswith("<!DOCTYPE html>")
    assert "75%" in html and "cache hit rate" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "demo &lt;plan&gt;" in html and "tea &amp; &lt;b&gt;" in html and "e&lt;1&gt;" in html
    assert html.count("<rect") >= 5


def test_report_of_a_failed_run_shows_the_error() -> None:
    html = render_report(_record(ok=False))
    assert "failed" in html and "step raised ValueError: &lt;bad&gt;" in html
    assert "#ef4444" in html


def test_report_wraps_long_values_instead_of_overflowing() -> None:
    html = render_report(_record(ok=True))
    styles = html[html.index("<style>") : html.index("</style>")]
    pre = styles[styles.index("pre{") :]
    assert (
        "white-space:pre-wrap" in pre[: pre.index("}")] and "overflow-wrap:anywhere" in pre[: pre.index("}")]
    )
