"""Fitness notes, fitness parsing, sandbox limits and the evolve configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentflow.agents.evogit import EvolveConfig, FitnessNote, Sandbox, SandboxLimits, parse_fitness
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


def test_sandbox_limits_reject_too_few_processes() -> None:
    with pytest.raises(ConfigError, match="max_processes"):
        SandboxLimits(max_processes=2)


def test_sandbox_environment_drops_api_keys_unless_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("PATH", "/usr/bin")
    env = Sandbox("true", env={"SEED": "3"}).environment(tmp_path)
    assert "OPENAI_API_KEY" not in env
    assert env["PATH"] == "/usr/bin" and env["SEED"] == "3" and env["HOME"] == str(tmp_path)
    allowed = Sandbox("true", pass_env=["OPENAI_API_KEY"]).environment(tmp_path)
    assert allowed["OPENAI_API_KEY"] == "sk-secret"


@pytest.mark.parametrize("name", ["", "A B", "X=1", "1ABC"])
def test_sandbox_rejects_invalid_environment_variable_name(name: str) -> None:
    with pytest.raises(ConfigError, match="environment variable name"):
        Sandbox("true", pass_env=[name])


def test_evolve_config_passes_max_processes_and_pass_env_to_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-1")
    monkeypatch.setenv("GITHUB_TOKEN", "gh-1")
    config = EvolveConfig(repo=Path("."), fitness="true", max_processes=40, pass_env=("HF_TOKEN",))
    sandbox = config.sandbox()
    env = sandbox.environment(Path("/x"))
    assert sandbox.limits.max_processes == 40
    assert env["HF_TOKEN"] == "hf-1" and "GITHUB_TOKEN" not in env
