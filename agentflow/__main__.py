"""``python -m agentflow``: the same as the ``agentflow`` command."""

from __future__ import annotations

from agentflow.cli import main

raise SystemExit(main())
