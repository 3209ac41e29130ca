"""Fitness notes, fitness parsing, sandbox limits and the evolve configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentflow.agents.evogit import EvolveConfig, FitnessNote, SandboxLimits, parse_fitness
from agentflow.errors import ConfigError


def test_fitness_note_round_trips_through_json() -> None:
    note = FitnessNote(commit="a" * 40, status="ok", fitness=-3.5, parents=["b" * 40], operator="crossover")
    again = FitnessNote.model_validate_json(note.model_dump_json())
    assert again == note


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("-3.25\n", -3.25),
        ("loss\nscore = 1e-3\n\n", 0.001),
        ("7 of 10 passed: 0.7", 0.7),
        ("", None),
        ("nan\n", None),
    ],
)
def test_parse_fitness_reads_last_number_of_last_line(stdout: str, expected: float | None) -> None:
    assert parse_fitness(stdout) == expected


def test_sandbox_limits_reject_zero_cpu() -> None:
    with pytest.raises(ConfigError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=0)


def test_evolve_config_rejects_unknown_field_and_bad_counts() -> None:
    with pytest.raises(ValidationError):
        EvolveConfig.model_validate({"repo": ".", "fitness": "true", "agentz": 3})
    with pytest.raises(ValidationError):
        EvolveConfig(repo=".", fitness="true", agents=0)  # type: ignore[arg-type]
