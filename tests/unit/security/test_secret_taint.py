"""Redaction as taint tracking (issue 18 item 3): a revealed secret value, in every form it takes
(raw, JSON-escaped once and twice, repr, HTML), never reaches a prompt rendered from a plan template,
a journal column (step values, begun rows' states, runs.result, runs.error, inputs), or an exception
chain; two runs in one process do not see each other's revealed values."""

from __future__ import annotations

import json
import sqlite3
import traceback
from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from agentflow import run
from agentflow.dsl import Err, step, update
from agentflow.engines import FunctionEngine, GenerationRequest, Message
from agentflow.executors import ToolRegistry
from agentflow.plans import load_plan_text
from agentflow.secrets import REDACTED, encoded_forms, redact, redact_request, secret, secret_scope

pytestmark = pytest.mark.anyio

# A secret with a quote, a backslash and a non-ASCII letter: its JSON and repr forms differ from it.
NASTY = 'pw"with\\slash-ünï-7731'


@pytest.fixture
def nasty_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TAINT_TEST_KEY", NASTY)
    return "TAINT_TEST_KEY"


def _leaks(text: str, value: str = NASTY) -> list[str]:
    return [form for form in encoded_forms(value) if form in text]


def _journal_text(db: str) -> str:
    """Every byte of the journal (main file and WAL), decoded: what someone reading the disk sees."""
    data = b"".join(p.read_bytes() for p in Path(db).parent.glob(Path(db).name + "*"))
    return data.decode("utf-8", "replace")


def test_encoded_forms_cover_json_twice_repr_and_html() -> None:
    forms = encoded_forms(NASTY)
    once = json.dumps(NASTY)[1:-1]
    assert {
        NASTY,
        once,
        json.dumps(once)[1:-1],
        repr(NASTY)[1:-1],
        json.dumps(NASTY, ensure_ascii=False)[1:-1],
    } <= forms
    assert any("&quot;" in f for f in forms)


async def test_secret_with_quote_and_backslash_never_reaches_journal_step_values_or_result(
    tmp_path: Path, nasty_secret: str
) -> None:
    class Box(BaseModel):
        notes: list[str] = []

    @step
    async def fetch_token() -> dict[str, str]:
        value = secret(nasty_secret).reveal()
        await update(notes=[f"saw {value}", json.dumps({"inner": value})])
        return {"token": value, "nested": json.dumps({"token": value})}

    @step
    async def wf() -> dict[str, str]:
        return await fetch_token()

    db = str(tmp_path / "j.db")
    out = await run(wf, state=Box(), run_id="r1", journal=db)
    assert out.unwrap()["token"] == NASTY  # the caller still gets the value itself
    text = _journal_text(db)
    assert _leaks(text) == []
    with sqlite3.connect(db) as conn:
        (result,) = conn.execute("SELECT result FROM runs").fetchone()
    assert json.loads(result)["token"] == REDACTED


async def test_runs_error_and_exception_chain_hold_no_secret(tmp_path: Path, nasty_secret: str) -> None:
    @step
    async def call_api() -> str:
        value = secret(nasty_secret).reveal()
        try:
            raise KeyError(f"no account for key {value}")
        except KeyError as inner:
            err = ValueError(f"login failed with {value!r}", {"key": value})
            err.add_note(f"key was {json.dumps(value)}")
            raise err from inner

    db = str(tmp_path / "j.db")
    out = await run(call_api, run_id="r1", journal=db)
    assert isinstance(out, Err)
    shown = "".join(traceback.format_exception(out.error))
    assert "ValueError" in shown and "KeyError" in shown and REDACTED in shown
    assert _leaks(shown) == []
    assert _leaks(str(out.error)) == []
    assert _leaks(_journal_text(db)) == []
    with sqlite3.connect(db) as conn:
        (error,) = conn.execute("SELECT error FROM runs").fetchone()
    assert REDACTED in error


async def test_begun_row_state_of_a_non_idempotent_step_holds_no_secret(
    tmp_path: Path, nasty_secret: str
) -> None:
    class Box(BaseModel):
        seen: str = ""

    @step
    async def read_key() -> int:
        await update(seen=secret(nasty_secret).reveal())
        return 1

    @step(idempotent=False)
    async def transfer() -> int:
        raise RuntimeError("crashed mid-transfer")

    @step
    async def wf() -> int:
        return await read_key() + await transfer()

    db = str(tmp_path / "j.db")
    out = await run(wf, state=Box(), run_id="r1", journal=db)
    assert isinstance(out, Err)
    with sqlite3.connect(db) as conn:
        status, state = conn.execute(
            "SELECT s.status, st.json FROM steps s JOIN states st ON st.hash = s.state_hash WHERE s.path = 'wf/transfer'"
        ).fetchone()
    assert status == "begun" and json.loads(state)["seen"] == REDACTED
    assert _leaks(_journal_text(db)) == []


async def test_plan_template_does_not_pass_a_tool_revealed_value_to_the_model(nasty_secret: str) -> None:
    def leak_key() -> str:
        """Return the API key (a tool gone wrong)."""
        return f"key={secret(nasty_secret).reveal()}"

    tools = ToolRegistry()
    tools.register(leak_key)
    loaded = load_plan_text(
        "apiVersion: agentflow/v1\nkind: Plan\nname: t\n"
        "steps:\n"
        "  - {id: w, tool: leak_key, args: {}}\n"
        '  - {id: ask, prompt: "summarize {{steps.w}}"}\n'
        '  - {id: raw, prompt: "{{steps.w}}"}\n',
        tools=tools,
    )
    prompts: list[str] = []

    def answer(request: GenerationRequest) -> str:
        assert request.messages is not None
        prompts.extend(m.content for m in request.messages)
        return "ok"

    out = await run(loaded.workflow, engine=FunctionEngine(answer))
    assert out.unwrap() is not None
    user_prompts = [p for p in prompts if "key=" in p]
    assert len(user_prompts) == 2
    assert all(REDACTED in p for p in user_prompts)
    assert _leaks("\n".join(prompts)) == []


async def test_two_concurrent_runs_do_not_see_each_others_revealed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANT_A_KEY", "alpha-secret-111")
    monkeypatch.setenv("TENANT_B_KEY", "bravo-secret-222")
    revealed = {"a": anyio.Event(), "b": anyio.Event()}
    seen: dict[str, tuple[str, str]] = {}

    def tenant(me: str, other: str) -> object:
        @step
        async def body() -> str:
            secret(f"TENANT_{me.upper()}_KEY").reveal()
            revealed[me].set()
            await revealed[other].wait()  # both values are revealed now, each in its own run
            text = "alpha-secret-111 bravo-secret-222"
            # In a worker thread too: the run's scope follows it there.
            seen[me] = (redact(text), await anyio.to_thread.run_sync(redact, text))
            return "done"

        return body

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, tenant("a", "b"))
        tg.start_soon(run, tenant("b", "a"))
    assert seen["a"] == ("[secret] bravo-secret-222",) * 2
    assert seen["b"] == ("alpha-secret-111 [secret]",) * 2
    # Nothing leaked into the process's own scope either.
    assert redact("alpha-secret-111 bravo-secret-222") == "alpha-secret-111 bravo-secret-222"


async def test_value_revealed_in_a_nested_scope_is_redacted_in_the_enclosing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NESTED_KEY", "nested-value-42")
    with secret_scope():

        @step
        async def inner() -> str:
            return secret("NESTED_KEY").reveal()

        assert (await run(inner)).unwrap() == "nested-value-42"
        assert redact("got nested-value-42") == f"got {REDACTED}"
    assert redact("got nested-value-42") == "got nested-value-42"


async def test_redact_request_blanks_prompt_and_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQ_KEY", "req-secret-999")
    with secret_scope():
        secret("REQ_KEY").reveal()
        chat = GenerationRequest(
            messages=(Message("system", "be brief"), Message("user", '{"k": "req-secret-999"}')), max_tokens=7
        )
        clean_chat = redact_request(chat)
        clean_prompt = redact_request(GenerationRequest(prompt="use req-secret-999"))
    assert clean_prompt.prompt == f"use {REDACTED}"
    assert clean_chat.messages is not None
    assert [m.content for m in clean_chat.messages] == ["be brief", f'{{"k": "{REDACTED}"}}']
    assert clean_chat.max_tokens == 7
