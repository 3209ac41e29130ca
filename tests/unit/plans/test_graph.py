"""The step DAG and its SVG picture."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agentflow.plans import load_plan, load_plan_text, plan_graph, render_svg

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("*.yaml"))
SVG = "{http://www.w3.org/2000/svg}"


def test_graph_orders_parallel_children_by_their_references() -> None:
    loaded = load_plan_text(
        """apiVersion: agentflow/v1
kind: Plan
steps:
  - id: first
    prompt: a
  - id: block
    parallel:
      - {id: x, prompt: "{{steps.y}}"}
      - {id: y, prompt: b}
      - {id: z, prompt: c}
  - id: last
    prompt: d
"""
    )
    g = plan_graph(loaded.plan)
    assert g.topological_order()[0] == "start" and g.topological_order()[-1] == "end"
    assert g.has_edge("start", "first") and g.has_edge("first", "block")
    assert g.has_edge("block", "y") and g.has_edge("y", "x") and not g.has_edge("block", "x")
    assert (
        g.has_edge("x", "block.join") and g.has_edge("z", "block.join") and not g.has_edge("y", "block.join")
    )
    assert g.has_edge("block.join", "last") and g.has_edge("last", "end")
    assert g.nodes["x"].kind == "llm"


def test_graph_marks_loop_repeat_edges() -> None:
    loaded = load_plan_text(
        """apiVersion: agentflow/v1
kind: Plan
steps:
  - id: lp
    loop: {max_iter: 2, until: {value: "{{steps.body}}"}}
    do: [{id: body, prompt: x}]
"""
    )
    g = plan_graph(loaded.plan)
    assert g.edges["body", "lp"].back is True
    assert g.forward_predecessors()["lp"] == ["start"]  # the repeat edge is left out of the layering


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_svg_is_valid_xml_with_a_box_per_step(path: Path) -> None:
    loaded = load_plan(path)
    g = plan_graph(loaded.plan)
    root = ET.fromstring(render_svg(g, title=loaded.name))
    assert root.tag == f"{SVG}svg"
    groups = root.findall(f"{SVG}g")
    assert len(groups) == len(g.nodes)
    titles = {grp.find(f"{SVG}title").text.split(":")[0] for grp in groups}  # type: ignore[union-attr]
    assert titles == set(g.nodes)
    assert len(root.findall(f"{SVG}path")) == len(g.edges)
