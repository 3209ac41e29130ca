"""The step DAG of a plan and a dependency-free SVG picture of it (``agentflow graph``).

Nodes are steps; a composite step (parallel, sequence, map, branch, loop) is a node where its children
start and gets a join node (``<id>.join``) where they end. Edges are "runs after". A loop's repeat edge
is marked ``back=True`` and drawn dashed; it is left out of the layering, so the layout is a DAG.
The layout is layered (longest path from the start) with a barycentre pass to reduce crossings.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal

from ._compile import sibling_needs
from ._schema import BranchStep, LLMStep, LoopStep, MapStep, ParallelStep, Plan, SequenceStep, Step, ToolStep

__all__ = ["StepEdge", "StepGraph", "StepNode", "plan_graph", "render_svg"]

StepKind = Literal["llm", "tool", "parallel", "sequence", "map", "branch", "loop", "join", "io"]

_COLORS: dict[StepKind, str] = {
    "llm": "#dbeafe",
    "tool": "#dcfce7",
    "parallel": "#fef3c7",
    "sequence": "#f3f4f6",
    "map": "#fae8ff",
    "branch": "#ffe4e6",
    "loop": "#e0e7ff",
    "join": "#ffffff",
    "io": "#f1f5f9",
}


@dataclass(frozen=True)
class StepNode:
    """A box of the picture: a step, a join where a composite step's children end, or the plan's start/end."""

    kind: StepKind
    label: str
    detail: str


@dataclass(frozen=True)
class StepEdge:
    """ "Runs after": ``label`` names a branch's ``then``/``else`` edge; ``back`` marks a loop's repeat edge."""

    label: str = ""
    back: bool = False


@dataclass
class StepGraph:
    """A plan's step graph; a DAG once the ``back`` edges are left out."""

    nodes: dict[str, StepNode] = field(default_factory=dict)
    """Nodes by id, in document order."""
    edges: dict[tuple[str, str], StepEdge] = field(default_factory=dict)
    """Edges by ``(from, to)``, in the order they were added."""

    def has_edge(self, source: str, target: str) -> bool:
        """Whether ``target`` runs right after ``source``."""
        return (source, target) in self.edges

    def forward_predecessors(self) -> dict[str, list[str]]:
        """For every node, the nodes it runs after, leaving out loop repeat edges."""
        preds: dict[str, list[str]] = {n: [] for n in self.nodes}
        for (u, v), edge in self.edges.items():
            if not edge.back:
                preds[v].append(u)
        return preds

    def topological_order(self) -> list[str]:
        """Node ids so that each comes after those it runs after (loop repeat edges left out)."""
        return list(graphlib.TopologicalSorter(self.forward_predecessors()).static_order())


def _short(text: str, limit: int = 28) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Builder:
    def __init__(self) -> None:
        self.g = StepGraph()

    def node(self, node_id: str, kind: StepKind, label: str, detail: str = "") -> None:
        self.g.nodes[node_id] = StepNode(kind, label, detail)

    def edges(self, preds: set[str], target: str) -> None:
        for p in sorted(preds):
            self.g.edges.setdefault((p, target), StepEdge())

    def label(self, source: str, target: str, label: str) -> None:
        self.g.edges[source, target] = dataclasses.replace(self.g.edges[source, target], label=label)

    def sequence(self, steps: Sequence[Step], preds: set[str]) -> set[str]:
        for step in steps:
            preds = self.step(step, preds)
        return preds

    def step(self, s: Step, preds: set[str]) -> set[str]:
        if isinstance(s, LLMStep):
            detail = f"agent {s.agent}" if s.agent else _short(s.prompt)
            self.node(s.id, "llm", f"{s.id}", f"LLM · {detail}")
            self.edges(preds, s.id)
            return {s.id}
        if isinstance(s, ToolStep):
            self.node(s.id, "tool", s.id, f"tool · {s.tool}")
            self.edges(preds, s.id)
            return {s.id}
        join = f"{s.id}.join"
        if isinstance(s, ParallelStep):
            self.node(s.id, "parallel", s.id, f"parallel · {len(s.parallel)} branches")
            self.edges(preds, s.id)
            exits: dict[str, set[str]] = {}
            used: set[str] = set()
            by_id = {child.id: child for child in s.parallel}
            needs = sibling_needs(s)
            order = {child.id: i for i, child in enumerate(s.parallel)}
            sorter = graphlib.TopologicalSorter(needs)
            sorter.prepare()
            while sorter.is_active():
                ready = sorted(sorter.get_ready(), key=order.__getitem__)  # declaration order among peers
                for cid in ready:
                    wait = set().union(*(exits[d] for d in needs[cid]))
                    used |= wait
                    exits[cid] = self.step(by_id[cid], wait or {s.id})
                    sorter.done(cid)
            self.node(join, "join", "join", "")
            for ends in exits.values():
                if not (ends & used):
                    self.edges(ends, join)
            return {join}
        if isinstance(s, SequenceStep):
            self.node(s.id, "sequence", s.id, f"sequence · {len(s.steps)} steps")
            self.edges(preds, s.id)
            return self.sequence(s.steps, {s.id})
        if isinstance(s, MapStep):
            limit = f" ≤{s.max_concurrency} at once" if s.max_concurrency else ""
            self.node(s.id, "map", s.id, f"map · {_short(s.map, 20)}{limit}")
            self.edges(preds, s.id)
            ends = self.sequence(s.do, {s.id})
            self.node(join, "join", "collect", "")
            self.edges(ends, join)
            return {join}
        if isinstance(s, BranchStep):
            self.node(s.id, "branch", s.id, f"branch · {_short(s.branch.value, 20)}")
            self.edges(preds, s.id)
            ends = self.sequence(s.then, {s.id})
            self.label(s.id, s.then[0].id, "then")
            ends |= self.sequence(s.else_, {s.id}) if s.else_ else {s.id}
            self.node(join, "join", "join", "")
            self.edges(ends, join)
            self.label(s.id, s.else_[0].id if s.else_ else join, "else")
            return {join}
        if isinstance(s, LoopStep):
            self.node(s.id, "loop", s.id, f"loop · ≤{s.loop.max_iter} times")
            self.edges(preds, s.id)
            ends = self.sequence(s.do, {s.id})
            for e in sorted(ends):
                self.g.edges[e, s.id] = StepEdge(back=True)
            self.node(join, "join", "done", "")
            self.edges(ends, join)
            return {join}
        raise AssertionError(f"unknown step kind {type(s).__name__}")


def plan_graph(plan: Plan) -> StepGraph:
    """The plan's step graph (see the module docstring)."""
    b = _Builder()
    b.node("start", "io", "start", ", ".join(f"inputs.{n}" for n in plan.inputs) or "no inputs")
    ends = b.sequence(plan.steps, {"start"})
    b.node("end", "io", "end", ", ".join(f"outputs.{n}" for n in plan.outputs) or "result")
    b.edges(ends, "end")
    return b.g


def _layout(g: StepGraph) -> dict[str, tuple[int, int]]:
    """(layer, position in layer) of every node."""
    preds = g.forward_predecessors()
    layer: dict[str, int] = {}
    for n in g.topological_order():
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    layers: dict[int, list[str]] = {}
    for n in g.nodes:  # insertion order = document order
        layers.setdefault(layer[n], []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    for depth in sorted(layers):
        row = layers[depth]
        if depth > 0:

            def bary(n: str) -> float:
                ps = [pos[p][1] for p in preds[n] if p in pos]
                return sum(ps) / len(ps) if ps else 0.0

            row.sort(key=bary)
        for i, n in enumerate(row):
            pos[n] = (depth, i)
    return pos


def render_svg(g: StepGraph, *, title: str = "plan") -> str:
    """A standalone SVG picture of a ``plan_graph``."""
    pos = _layout(g)
    widths = {n: max(90, 7 * max(len(d.label), len(d.detail)) + 24) for n, d in g.nodes.items()}
    layers: dict[int, list[str]] = {}
    for n, (depth, _) in pos.items():
        layers.setdefault(depth, []).append(n)
    gap, row_h, box_h, margin = 28, 86, 44, 24
    row_widths = {d: sum(widths[n] for n in ns) + gap * (len(ns) - 1) for d, ns in layers.items()}
    total_w = max(row_widths.values()) + 2 * margin
    total_h = len(layers) * row_h + 2 * margin - (row_h - box_h) + 30
    centre: dict[str, tuple[float, float]] = {}
    for depth, ns in layers.items():
        ns.sort(key=lambda n: pos[n][1])
        x = (total_w - row_widths[depth]) / 2
        for n in ns:
            centre[n] = (x + widths[n] / 2, margin + 30 + depth * row_h + box_h / 2)
            x += widths[n] + gap
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker></defs>',
        f'<rect x="0" y="0" width="{total_w:.0f}" height="{total_h:.0f}" fill="#ffffff"/>',
        f'<text x="{margin}" y="{margin + 6}" font-size="15" font-weight="bold" fill="#0f172a">{escape(title)}</text>',
    ]
    for (u, v), edge in g.edges.items():
        (x1, y1), (x2, y2) = centre[u], centre[v]
        if edge.back:
            xr = max(x1 + widths[u] / 2, x2 + widths[v] / 2) + 18
            out.append(
                f'<path d="M {x1 + widths[u] / 2:.1f} {y1:.1f} C {xr:.1f} {y1:.1f}, {xr:.1f} {y2:.1f}, '
                f'{x2 + widths[v] / 2:.1f} {y2:.1f}" fill="none" stroke="#6366f1" stroke-dasharray="5 4" '
                'marker-end="url(#arrow)"><title>repeat</title></path>'
            )
            continue
        sy, ty = y1 + box_h / 2, y2 - box_h / 2
        mid = (sy + ty) / 2
        out.append(
            f'<path d="M {x1:.1f} {sy:.1f} C {x1:.1f} {mid:.1f}, {x2:.1f} {mid:.1f}, {x2:.1f} {ty:.1f}" '
            'fill="none" stroke="#64748b" stroke-width="1.4" marker-end="url(#arrow)"/>'
        )
        if edge.label:
            lx, ly = x1 + (x2 - x1) * 0.3, sy + (ty - sy) * 0.3
            out.append(
                f'<text x="{lx + 6:.1f}" y="{ly:.1f}" font-size="11" font-style="italic" fill="#be123c">'
                f"{escape(edge.label)}</text>"
            )
    for n, box in g.nodes.items():
        cx, cy = centre[n]
        w = widths[n]
        kind = box.kind
        radius = 20 if kind in ("io", "join") else 8
        out.append(f'<g class="step {escape(kind)}"><title>{escape(n)}: {escape(box.detail)}</title>')
        out.append(
            f'<rect x="{cx - w / 2:.1f}" y="{cy - box_h / 2:.1f}" width="{w:.1f}" height="{box_h}" rx="{radius}" '
            f'fill="{_COLORS[kind]}" stroke="#334155" stroke-width="1.2"/>'
        )
        if box.detail:
            out.append(
                f'<text x="{cx:.1f}" y="{cy - 4:.1f}" text-anchor="middle" font-size="13" font-weight="bold" '
                f'fill="#0f172a">{escape(box.label)}</text>'
            )
            out.append(
                f'<text x="{cx:.1f}" y="{cy + 13:.1f}" text-anchor="middle" font-size="11" fill="#475569">'
                f"{escape(box.detail)}</text>"
            )
        else:
            out.append(
                f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" font-size="12" fill="#334155">'
                f"{escape(box.label)}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
