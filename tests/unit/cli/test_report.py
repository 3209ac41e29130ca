"""Saved runs and the HTML report, without a browser (the e2e test loads it in Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentflow.report as report
from agentflow.dsl import Event, LLMCall, Log, StepEnded, StepStarted, ToolCall
from agentflow.errors import ConfigError
from agentflow.report import RunRecord, list_runs, load_run, render_report, save_run, spans_of

T0 = 1_700_000_000.0
TRACE: tuple[Event, ...] = (
    StepStarted(path="p", time=T0),
    StepStarted(path="p/a", time=T0 + 0.1),
    ToolCall(
        path="p/a", time=T0 + 0.3, tool="lookup", started=T0 + 0.1, seconds=0.2, args={"q": "x"}, result="42"
    ),
    StepEnded(path="p/a", time=T0 + 0.3, ok=True, seconds=0.2),
    StepStarted(path="p/b", time=T0 + 0.3),
    LLMCall(
        path="p/b",
        time=T0 + 1.3,
        engine="e<1>",
        prompt_tokens=100,
        cached_tokens=75,
        completion_tokens=9,
        started=T0 + 0.3,
        messages=(("system", "be brief"), ("user", "what is <x>?")),
        completion="an answer",
    ),
    StepEnded(path="p/b", time=T0 + 1.3, ok=False, seconds=1.0, error_type="StepError", error="boom"),
    StepEnded(path="p", time=T0 + 1.3, ok=False, seconds=1.3, error_type="StepError"),
)

# The same run as format 1 wrote it (before typed events): two shapes of tool.call, data dicts.
V1_LINES = [
    {"type": "run", "run_id": "old", "plan": "p", "engine": "test", "started": T0, "inputs": {}},
    {"type": "event", "kind": "step.start", "path": "p", "time": T0, "data": {}},
    {
        "type": "event",
        "kind": "tool.call",
        "path": "p",
        "time": T0 + 0.3,
        "data": {"tool": "lookup", "started": T0 + 0.1, "seconds": 0.2, "ok": False, "error": "no such key"},
    },
    {
        "type": "event",
        "kind": "tool.call",
        "path": "p/compiler",
        "time": T0 + 0.5,
        "data": {"task": 1, "tool": "search", "status": "timeout", "seconds": 0.1},
    },
    {
        "type": "event",
        "kind": "llm.call",
        "path": "p",
        "time": T0 + 1.0,
        "data": {
            "engine": "e",
            "prompt_tokens": 10,
            "cached_tokens": 4,
            "completion_tokens": 2,
            "started": T0,
        },
    },
    {"type": "event", "kind": "note", "path": "p", "time": T0 + 1.1, "data": {"x": 1}},
    {
        "type": "event",
        "kind": "step.end",
        "path": "p",
        "time": T0 + 1.2,
        "data": {"ok": True, "seconds": 1.2},
    },
    {"type": "result", "ok": True, "finished": T0 + 1.2, "value": {"a": 1}},
]


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


def test_format_1_saved_runs_still_open_with_typed_events(tmp_path: Path) -> None:
    (tmp_path / "old.jsonl").write_text("\n".join(json.dumps(line) for line in V1_LINES) + "\n")
    loaded = load_run("old", tmp_path)
    tools = [e for e in loaded.trace if isinstance(e, ToolCall)]
    assert [(t.tool, t.status, t.started) for t in tools] == [
        ("lookup", "error", T0 + 0.1),
        ("search", "timeout", pytest.approx(T0 + 0.4)),
    ]
    assert tools[0].error == "no such key"
    llm = [e for e in loaded.trace if isinstance(e, LLMCall)]
    assert [(c.prompt_tokens, c.cached_tokens, c.started) for c in llm] == [(10, 4, T0)]
    assert [e for e in loaded.trace if isinstance(e, Log)] == [
        Log(path="p", time=T0 + 1.1, name="note", data={"x": 1})
    ]
    html = render_report(loaded)
    assert "error: no such key" in html and "timeout" in html


def test_a_saved_run_of_a_newer_format_is_refused_naming_the_version(tmp_path: Path) -> None:
    (tmp_path / "new.jsonl").write_text(json.dumps({"type": "run", "format": 99, "run_id": "new"}) + "\n")
    with pytest.raises(ConfigError, match="format 99"):
        load_run("new", tmp_path)


def test_a_corrupt_event_line_names_the_file_and_line(tmp_path: Path) -> None:
    lines = [
        {"type": "run", "format": 2, "run_id": "bad", "started": T0},
        {"type": "event", "kind": "tool.call", "path": "p", "time": "soon", "tool": "x"},
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: .*tool.call event: time"):
        load_run("bad", tmp_path)


def test_report_shows_prompts_completions_and_tool_arguments_collapsed() -> None:
    html = render_report(_record())
    assert html.count("<details class=call>") == 2
    assert "what is &lt;x&gt;?" in html and "an answer" in html and "be brief" in html
    assert "&quot;q&quot;: &quot;x&quot;" in html and ">42<" in html


def test_a_failed_tool_call_is_shown_failed_in_the_report() -> None:
    failed = ToolCall(
        path="p",
        time=T0 + 0.5,
        tool="search",
        started=T0 + 0.2,
        seconds=0.3,
        status="error",
        error="HTTP 500",
    )
    record = RunRecord("r-2", "p", "test", T0, T0 + 1, True, trace=(*TRACE, failed))
    html = render_report(record)
    assert "<tr class=bad>" in html and "error: HTTP 500" in html
    (span,) = [s for s in spans_of(record.trace) if s.tool is failed]
    assert span.ok is False and span.start == T0 + 0.2


def test_report_wraps_long_values_instead_of_overflowing() -> None:
    html = render_report(_record(ok=True))
    styles = html[html.index("<style>") : html.index("</style>")]
    pre = styles[styles.index("pre{") :]
    assert (
        "white-space:pre-wrap" in pre[: pre.index("}")] and "overflow-wrap:anywhere" in pre[: pre.index("}")]
    )
