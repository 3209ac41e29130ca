"""A self-contained HTML report of one run: summary, timeline, LLM calls with cache hit rates, tool calls.

The page has no scripts and loads nothing from anywhere: styles are inline and the timeline is an inline
SVG, so it opens from a file, an e-mail attachment or a CI artifact exactly the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Literal, assert_never

from agentflow.dsl import (
    Event,
    InterruptWaiting,
    LLMCall,
    Log,
    PlanInvalid,
    RetryScheduled,
    RunJournaled,
    SchedulerSummary,
    StepEnded,
    StepReplayed,
    StepStarted,
    TimedOut,
    TokenDelta,
    ToolCall,
)
from agentflow.secrets import redact

from ._runs import RunRecord

__all__ = ["Span", "render_report", "spans_of"]

MAX_ROWS = 400
"""Timeline rows drawn at most (the tables still list every call)."""

SpanKind = Literal["step", "llm", "tool"]

_KIND_COLORS = {"step": "#94a3b8", "llm": "#3b82f6", "tool": "#22c55e"}


@dataclass(frozen=True)
class Span:
    """Something that took time in a run.

    Attributes:
        kind: ``step``, ``llm`` or ``tool``.
        path: The step path it ran under.
        label: A short name.
        start: Wall-clock start.
        end: Wall-clock end.
        ok: Whether it succeeded.
        error: Why it did not, if it did not.
        llm: The LLM call, for ``llm`` spans.
        tool: The tool call, for ``tool`` spans.
    """

    kind: SpanKind
    path: str
    label: str
    start: float
    end: float
    ok: bool = True
    error: str | None = None
    llm: LLMCall | None = None
    tool: ToolCall | None = None


def spans_of(trace: Sequence[Event]) -> list[Span]:
    """Step spans (from ``StepStarted``/``StepEnded`` pairs), LLM calls and tool calls, by start time."""
    spans: list[Span] = []
    open_steps: dict[str, list[float]] = {}
    for e in trace:
        match e:
            case StepStarted():
                open_steps.setdefault(e.path, []).append(e.time)
            case StepEnded():
                stack = open_steps.get(e.path)
                start = stack.pop() if stack else e.time - e.seconds
                label = e.path.rsplit("/", 1)[-1] or "<root>"
                error = None if e.ok else f"{e.error_type}: {e.error}" if e.error else e.error_type
                spans.append(Span("step", e.path, label, start, e.time, e.ok, error))
            case LLMCall():
                start = e.started or e.time - e.total_s
                label = f"LLM {e.role} {e.engine}".strip()
                spans.append(Span("llm", e.path, label, start, e.time, e.status == "ok", e.error, llm=e))
            case ToolCall():
                label = f"tool {e.tool}"
                spans.append(
                    Span("tool", e.path, label, e.started, e.started + e.seconds, e.ok, e.error, tool=e)
                )
            case (
                StepReplayed()
                | RetryScheduled()
                | TimedOut()
                | TokenDelta()
                | PlanInvalid()
                | InterruptWaiting()
                | RunJournaled()
                | SchedulerSummary()
                | Log()
            ):
                pass
            case _:
                assert_never(e)
    spans.sort(key=lambda s: (s.start, s.path.count("/"), s.kind != "step"))
    return spans


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _timeline(spans: Sequence[Span], t0: float, t1: float) -> str:
    rows = list(spans[:MAX_ROWS])
    label_w, chart_w, row_h, top = 320, 860, 20, 28
    width = label_w + chart_w + 20
    height = top + row_h * len(rows) + 10
    total = max(t1 - t0, 1e-6)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline">'
    ]
    for i in range(6):
        x = label_w + chart_w * i / 5
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height}" stroke="#e2e8f0"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top - 10}" font-size="10" text-anchor="middle" fill="#64748b">'
            f"{total * i / 5:.2f}s</text>"
        )
    for i, span in enumerate(rows):
        y = top + i * row_h
        depth = span.path.count("/")
        name = span.label if span.kind != "step" else span.path.rsplit("/", 1)[-1]
        out.append(
            f'<text x="{6 + 12 * min(depth, 12)}" y="{y + 14}" font-size="11" fill="#0f172a">'
            f"{escape(name[:40])}</text>"
        )
        x = label_w + chart_w * (span.start - t0) / total
        w = max(2.0, chart_w * (span.end - span.start) / total)
        color = _KIND_COLORS[span.kind] if span.ok else "#ef4444"
        tip = f"{span.path} · {span.label} · {span.end - span.start:.3f}s"
        if span.llm is not None:
            prompt, cached = span.llm.prompt_tokens, span.llm.cached_tokens
            shown = "unknown" if cached is None else f"{cached} ({_pct(cached, prompt)})"
            tip += f" · prompt {prompt} tok, cached {shown}"
        if not span.ok and span.error:
            tip += f" · {span.error}"
        out.append(
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 6}" rx="3" fill="{color}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    out.append("</svg>")
    more = len(spans) - len(rows)
    note = f"<p class=note>{more} more spans not drawn; see the tables below.</p>" if more > 0 else ""
    return "".join(out) + note


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str, failed: Sequence[bool] = ()
) -> str:
    if not rows:
        return f"<p class=note>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    marks = list(failed) + [False] * (len(rows) - len(failed))
    body = "".join(
        ("<tr class=bad>" if bad else "<tr>") + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row, bad in zip(rows, marks, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _block(title: str, text: str) -> str:
    return f"<div class=msg><b>{escape(title)}</b><pre>{escape(text)}</pre></div>"


def _llm_contents(calls: Sequence[LLMCall]) -> str:
    """One collapsible section per LLM call with its prompt and completion (when the run captured them)."""
    if not calls:
        return ""
    items = []
    for i, c in enumerate(calls, start=1):
        parts: list[str] = []
        if c.messages is not None:
            parts += [_block(role, content) for role, content in c.messages]
        if c.prompt is not None:
            parts.append(_block("prompt", c.prompt))
        if c.completion is not None:
            parts.append(_block("completion", c.completion))
        if c.tool_calls:
            parts.append(
                _block("tool calls", "\n".join(f"{cid}: {name}({args})" for cid, name, args in c.tool_calls))
            )
        if c.error:
            parts.append(_block("error", c.error))
        if not parts:
            parts.append("<p class=note>content not captured (run with capture_content=True)</p>")
        state = "" if c.status == "ok" else f" · {c.status}"
        summary = f"#{i} {c.path or '<root>'} · {c.role}{state} · {c.completion_tokens} tokens"
        items.append(f"<details class=call><summary>{escape(summary)}</summary>{''.join(parts)}</details>")
    return "<h3>Prompts and completions</h3>" + "".join(items)


def _tool_contents(calls: Sequence[ToolCall]) -> str:
    """One collapsible section per tool call with its arguments and result or error."""
    if not calls:
        return ""
    items = []
    for i, t in enumerate(calls, start=1):
        parts: list[str] = []
        if t.args is not None:
            parts.append(_block("arguments", json.dumps(t.args, indent=2, ensure_ascii=False)))
        if t.result is not None:
            parts.append(_block("result", t.result))
        if t.error:
            parts.append(_block("error", t.error))
        if not parts:
            parts.append("<p class=note>content not captured (run with capture_content=True)</p>")
        summary = f"#{i} {t.path or '<root>'} · {t.tool} · {t.status}"
        items.append(f"<details class=call><summary>{escape(summary)}</summary>{''.join(parts)}</details>")
    return "<h3>Arguments and results</h3>" + "".join(items)


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#0f172a;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.meta{color:#475569;font-size:13px}
.ok{color:#15803d;font-weight:bold} .failed{color:#b91c1c;font-weight:bold}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{color:#64748b;font-size:12px}
table{border-collapse:collapse;font-size:12px} th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left}
th{background:#f8fafc} td{font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.note{color:#64748b;font-size:12px} pre{background:#f8fafc;padding:10px;border-radius:6px;overflow:auto;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
h3{font-size:14px;margin:16px 0 6px} tr.bad td{background:#fef2f2;color:#991b1b}
details.call{border:1px solid #e2e8f0;border-radius:6px;margin:4px 0;padding:4px 10px;font-size:12px}
details.call summary{cursor:pointer} .msg b{display:block;margin-top:6px;color:#475569}
.msg pre{white-space:pre-wrap;word-break:break-word;margin:2px 0}
"""


def render_report(record: RunRecord) -> str:
    """The run as one standalone HTML page."""
    spans = spans_of(record.trace)
    t0 = min([record.started, *(s.start for s in spans)])
    t1 = max([record.finished, *(s.end for s in spans)])
    llm = [s.llm for s in spans if s.llm is not None]
    tools = [s.tool for s in spans if s.tool is not None]
    steps = [s for s in spans if s.kind == "step"]
    prompt = sum(c.prompt_tokens for c in llm)
    cached = sum(c.cached_tokens or 0 for c in llm)  # unknown counts as none reused
    completion = sum(c.completion_tokens for c in llm)
    failed_tools = sum(1 for t in tools if not t.ok)
    status = '<span class="ok">succeeded</span>' if record.ok else '<span class="failed">failed</span>'
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.started))
    cards = [
        (f"{t1 - t0:.2f}s", "duration"),
        (str(len(steps)), "steps"),
        (str(len(llm)), "LLM calls"),
        (str(len(tools)), "tool calls"),
        (str(failed_tools), "failed tool calls"),
        (f"{prompt}", "prompt tokens"),
        (f"{cached}", "cached tokens"),
        (_pct(cached, prompt), "cache hit rate"),
        (f"{completion}", "completion tokens"),
    ]
    llm_rows = [
        [
            str(i),
            c.path or "<root>",
            c.role,
            c.engine,
            f"{(c.started or c.time - c.total_s) - t0:.3f}",
            f"{c.time - (c.started or c.time - c.total_s):.3f}",
            str(c.prompt_tokens),
            "?" if c.cached_tokens is None else str(c.cached_tokens),
            "?" if c.cached_tokens is None else _pct(c.cached_tokens, c.prompt_tokens),
            str(c.completion_tokens),
            f"{c.ttft_s:.3f}",
            c.finish_reason or "",
            c.status if c.status == "ok" else f"{c.status}: {c.error or ''}",
        ]
        for i, c in enumerate(llm, start=1)
    ]
    tool_rows = [
        [
            str(i),
            t.path or "<root>",
            t.tool,
            f"{t.started - t0:.3f}",
            f"{t.seconds:.3f}",
            "ok" if t.ok else f"{t.status}: {t.error or ''}",
        ]
        for i, t in enumerate(tools, start=1)
    ]
    outcome = (
        f"<pre>{escape(json.dumps(record.value, indent=2, ensure_ascii=False))}</pre>"
        if record.ok
        else f"<pre>{escape(record.error or 'unknown error')}</pre>"
    )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{k}</span>'
        for k, c in {**_KIND_COLORS, "failed": "#ef4444"}.items()
    )
    page = "".join(
        [
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
            '<link rel="icon" href="data:,">',
            f"<title>agentflow run {escape(record.run_id)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{escape(record.plan or 'run')} {status}</h1>",
            f'<div class="meta">run {escape(record.run_id)} · engine {escape(record.engine or "none")} · {when}</div>',
            '<div class="cards">',
            *(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards),
            "</div>",
            "<h2>Timeline</h2>",
            f'<div class="legend">{legend}</div>',
            _timeline(spans, t0, t1),
            "<h2>LLM calls</h2>",
            _table(
                [
                    "#",
                    "step",
                    "role",
                    "engine",
                    "start s",
                    "seconds",
                    "prompt",
                    "cached",
                    "hit",
                    "completion",
                    "ttft s",
                    "finish",
                    "status",
                ],
                llm_rows,
                "no LLM calls",
                failed=[c.status != "ok" for c in llm],
            ),
            _llm_contents(llm),
            "<h2>Tool calls</h2>",
            _table(
                ["#", "step", "tool", "start s", "seconds", "status"],
                tool_rows,
                "no tool calls",
                failed=[not t.ok for t in tools],
            ),
            _tool_contents(tools),
            "<h2>Inputs</h2>",
            f"<pre>{escape(json.dumps(dict(record.inputs), indent=2, ensure_ascii=False))}</pre>",
            "<h2>Result</h2>" if record.ok else "<h2>Error</h2>",
            outcome,
            "</body></html>\n",
        ]
    )
    # Secret values revealed in this process never reach a report, whatever a tool or step returned.
    return redact(page)
