"""A self-contained HTML report of one run: summary, timeline, LLM calls with cache hit rates, tool calls.

The page has no scripts and loads nothing from anywhere: styles are inline and the timeline is an inline
SVG, so it opens from a file, an e-mail attachment or a CI artifact exactly the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from agentflow.dsl import Event
from agentflow.secrets import redact

from ._runs import RunRecord

__all__ = ["Span", "render_report", "spans_of"]

MAX_ROWS = 400
"""Timeline rows drawn at most (the tables still list every call)."""

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
        data: The event data it came from.
    """

    kind: str
    path: str
    label: str
    start: float
    end: float
    ok: bool = True
    data: Mapping[str, object] = field(default_factory=dict)


def _num(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def spans_of(trace: Sequence[Event]) -> list[Span]:
    """Step spans (from ``step.start``/``step.end`` pairs), LLM calls and tool calls, by start time."""
    spans: list[Span] = []
    open_steps: dict[str, list[float]] = {}
    for e in trace:
        if e.kind == "step.start":
            open_steps.setdefault(e.path, []).append(e.time)
        elif e.kind == "step.end":
            stack = open_steps.get(e.path)
            start = stack.pop() if stack else e.time - _num(e.data.get("seconds"))
            label = e.path.rsplit("/", 1)[-1] or "<root>"
            spans.append(Span("step", e.path, label, start, e.time, bool(e.data.get("ok", True)), e.data))
        elif e.kind == "llm.call":
            start = _num(e.data.get("started"), e.time - _num(e.data.get("total_s")))
            label = f"LLM {e.data.get('engine', '')}".strip()
            spans.append(Span("llm", e.path, label, start, e.time, True, e.data))
        elif e.kind == "tool.call":
            start = _num(e.data.get("started"), e.time)
            end = start + _num(e.data.get("seconds"))
            label = f"tool {e.data.get('tool', '')}"
            spans.append(Span("tool", e.path, label, start, end, bool(e.data.get("ok", True)), e.data))
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
        if span.kind == "llm":
            prompt = _num(span.data.get("prompt_tokens"))
            cached = _num(span.data.get("cached_tokens"))
            tip += f" · prompt {prompt:.0f} tok, cached {cached:.0f} ({_pct(cached, prompt)})"
        out.append(
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 6}" rx="3" fill="{color}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    out.append("</svg>")
    more = len(spans) - len(rows)
    note = f"<p class=note>{more} more spans not drawn; see the tables below.</p>" if more > 0 else ""
    return "".join(out) + note


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f"<p class=note>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
"""


def render_report(record: RunRecord) -> str:
    """The run as one standalone HTML page."""
    spans = spans_of(record.trace)
    t0 = min([record.started, *(s.start for s in spans)])
    t1 = max([record.finished, *(s.end for s in spans)])
    llm = [s for s in spans if s.kind == "llm"]
    tools = [s for s in spans if s.kind == "tool"]
    steps = [s for s in spans if s.kind == "step"]
    prompt = sum(_num(s.data.get("prompt_tokens")) for s in llm)
    cached = sum(_num(s.data.get("cached_tokens")) for s in llm)
    completion = sum(_num(s.data.get("completion_tokens")) for s in llm)
    status = '<span class="ok">succeeded</span>' if record.ok else '<span class="failed">failed</span>'
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.started))
    cards = [
        (f"{t1 - t0:.2f}s", "duration"),
        (str(len(steps)), "steps"),
        (str(len(llm)), "LLM calls"),
        (str(len(tools)), "tool calls"),
        (f"{prompt:.0f}", "prompt tokens"),
        (f"{cached:.0f}", "cached tokens"),
        (_pct(cached, prompt), "cache hit rate"),
        (f"{completion:.0f}", "completion tokens"),
    ]
    llm_rows = [
        [
            s.path or "<root>",
            str(s.data.get("engine", "")),
            f"{s.start - t0:.3f}",
            f"{s.end - s.start:.3f}",
            f"{_num(s.data.get('prompt_tokens')):.0f}",
            f"{_num(s.data.get('cached_tokens')):.0f}",
            _pct(_num(s.data.get("cached_tokens")), _num(s.data.get("prompt_tokens"))),
            f"{_num(s.data.get('completion_tokens')):.0f}",
            f"{_num(s.data.get('ttft_s')):.3f}",
            str(s.data.get("finish_reason", "")),
        ]
        for s in llm
    ]
    tool_rows = [
        [
            s.path or "<root>",
            str(s.data.get("tool", "")),
            f"{s.start - t0:.3f}",
            f"{s.end - s.start:.3f}",
            "ok" if s.ok else f"failed: {s.data.get('error', '')}",
        ]
        for s in tools
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
                    "step",
                    "engine",
                    "start s",
                    "seconds",
                    "prompt",
                    "cached",
                    "hit",
                    "completion",
                    "ttft s",
                    "finish",
                ],
                llm_rows,
                "no LLM calls",
            ),
            "<h2>Tool calls</h2>",
            _table(["step", "tool", "start s", "seconds", "status"], tool_rows, "no tool calls"),
            "<h2>Inputs</h2>",
            f"<pre>{escape(json.dumps(dict(record.inputs), indent=2, ensure_ascii=False))}</pre>",
            "<h2>Result</h2>" if record.ok else "<h2>Error</h2>",
            outcome,
            "</body></html>\n",
        ]
    )
    # Secret values revealed in this process never reach a report, whatever a tool or step returned.
    return redact(page)
