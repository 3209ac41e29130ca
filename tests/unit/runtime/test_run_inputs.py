"""``agentflow.run`` checks inputs against the workflow's parameters and reports set-up failures as values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from agentflow import Err, Ok, flow, generate, run, run_sync
from agentflow.errors import ConfigError, EngineUnavailableError
from agentflow.runtime._inputs import validate_inputs

pytestmark = pytest.mark.anyio


class Ticket(BaseModel):
    title: str
    urgency: int = 1


@flow
async def count_texts(texts: list[str], limit: int = 10) -> int:
    return min(len(texts), limit)


@flow
async def file_ticket(ticket: Ticket) -> str:
    return f"{ticket.title}:{ticket.urgency}"


def test_a_str_given_for_list_of_str_is_a_clear_error() -> None:
    out = run_sync(count_texts, {"texts": "one text"})
    assert isinstance(out, Err) and isinstance(out.error, ConfigError)
    message = str(out.error)
    assert "input 'texts' = 'one text' is not a valid list[str]" in message
    assert "count_texts" in message


def test_a_missing_input_is_named_with_its_type() -> None:
    out = run_sync(count_texts, {"limit": 3})
    assert isinstance(out, Err) and isinstance(out.error, ConfigError)
    assert "input 'texts' (list[str]) is missing" in str(out.error)


def test_an_unknown_input_is_named_with_the_inputs_the_workflow_takes() -> None:
    out = run_sync(count_texts, {"texts": [], "limt": 3})
    assert isinstance(out, Err)
    assert "has no input(s) ['limt']; its inputs are ['limit', 'texts']" in str(out.error)


def test_valid_inputs_are_converted_to_the_parameter_types() -> None:
    assert run_sync(count_texts, {"texts": ("a", "b", "c"), "limit": "2"}).unwrap() == 2
    assert run_sync(file_ticket, {"ticket": {"title": "crash", "urgency": 3}}).unwrap() == "crash:3"


def test_every_problem_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as info:
        validate_inputs(count_texts, {"texts": ["a", 2], "limit": "many"})
    message = str(info.value)
    assert "input 'texts[1]' = 2" in message and "input 'limit' = 'many'" in message


def test_unannotated_and_var_keyword_workflows_take_their_inputs_as_given() -> None:
    def loose(a, **rest):  # type: ignore[no-untyped-def]
        return a

    assert validate_inputs(loose, {"a": "x", "b": 1}) == {"a": "x", "b": 1}


def test_a_bad_engine_spec_is_an_err_not_an_exception() -> None:
    out = run_sync(generate("hi"), engine="warp:9")
    assert isinstance(out, Err) and isinstance(out.error, ConfigError)
    assert "invalid engine spec 'warp:9'" in str(out.error)


def test_a_missing_model_file_is_an_err_not_an_exception(tmp_path: Path) -> None:
    out = run_sync(generate("hi"), engine=f"llamacpp:{tmp_path / 'nope.gguf'}")
    assert isinstance(out, Err) and isinstance(out.error, EngineUnavailableError)
    assert "does not exist" in str(out.error)


def test_agentflow_engine_is_the_default_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_ENGINE", "test:")
    out = run_sync(generate("hello"))
    assert isinstance(out, Ok) and out.value.text.startswith("echo: hello")


async def test_an_explicit_engine_wins_over_agentflow_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_ENGINE", "warp:9")
    out = await run(generate("hello"), engine="test:")
    assert isinstance(out, Ok)
