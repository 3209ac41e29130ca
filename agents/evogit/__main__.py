"""``python -m agentflow.agents.evogit``: the ``evolve`` command line without the agentflow CLI."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
