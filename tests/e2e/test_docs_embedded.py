"""The documentation's code blocks marked ``embedded`` run on the bundled model; ``slow`` ones run here too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from docs_blocks import Block, blocks, run_block, scratch

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("block", [b for b in blocks() if b.mode == "embedded"], ids=lambda b: b.id)
def test_embedded_block_runs_on_the_bundled_model(block: Block, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AGENTFLOW_ENGINE"}
    proc = run_block(block, scratch(tmp_path), env, timeout=900)
    assert proc.returncode == 0, (
        f"{block.id}:\n{block.code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", [b for b in blocks() if b.mode == "slow"], ids=lambda b: b.id)
def test_slow_block_runs(block: Block, tmp_path: Path) -> None:
    env = {**os.environ, "AGENTFLOW_ENGINE": "test:"}
    proc = run_block(block, scratch(tmp_path), env, timeout=900)
    assert proc.returncode == 0, (
        f"{block.id}:\n{block.code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )
