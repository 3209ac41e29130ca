"""The user's network allowlist (``agentflow.network``) and the plan loader's use of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.errors import ConfigError, PlanError
from agentflow.network import HostPattern, NetworkPolicy, user_config_path
from agentflow.plans import load_plan_text

OPENAI_PLAN = """\
apiVersion: agentflow/v1
kind: Plan
engine:
  spec: 'openai:{url}#m'
steps:
  - id: s
    prompt: hi
"""


@pytest.mark.parametrize(
    ("pattern", "host", "port", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1", 8000, True),
        ("127.0.0.1:8000", "127.0.0.1", 8000, True),
        ("127.0.0.1:8000", "127.0.0.1", 8001, False),
        ("*.corp.example", "gpu.corp.example", 443, True),
        ("*.corp.example", "corp.example", 443, False),
        ("*.corp.example", "evilcorp.example", 443, False),
        ("[::1]:8000", "::1", 8000, True),
        ("http://Example.org:81/v1", "example.org", 81, True),
        ("*", "anything.test", 1, True),
    ],
)
def test_host_pattern_matches_host_and_port(pattern: str, host: str, port: int, allowed: bool) -> None:
    assert HostPattern.parse(pattern).matches(host, port) is allowed


@pytest.mark.parametrize("bad", ["a b", "host:99999", "host:x", "[::1", "*.", "a/b", "ftp://h"])
def test_malformed_host_pattern_is_a_config_error_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        HostPattern.parse(bad)
    assert repr(bad) in str(info.value) or "URL" in str(info.value)


def test_policy_matches_the_host_httpx_connects_to_not_the_userinfo() -> None:
    policy = NetworkPolicy.of(["trusted.example"])
    assert policy.allows("https://trusted.example/v1")
    assert not policy.allows("http://trusted.example@evil.example/v1")
    assert not policy.allows("http://trusted.example.evil.example/v1")


def test_policy_from_user_reads_flags_environment_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agentflow" / "config.toml"
    config.parent.mkdir()
    config.write_text('[network]\nallow_hosts = ["c.example"]\nallow_trace_content = true\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path), "AGENTFLOW_ALLOW_HOSTS": "e1.example, e2.example:9"}
    assert user_config_path(env) == config
    policy = NetworkPolicy.from_user(["f.example"], environ=env)
    assert [str(p) for p in policy.hosts] == ["f.example", "e1.example", "e2.example:9", "c.example"]
    assert policy.trace_content


def test_policy_from_user_without_sources_allows_nothing(tmp_path: Path) -> None:
    policy = NetworkPolicy.from_user(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert policy == NetworkPolicy()
    assert not policy.allows("http://127.0.0.1:8000")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[network]\nallow_host = []\n", "unknown key"),
        ('[network]\nallow_hosts = "x"\n', "list of strings"),
        ("[network]\nallow_trace_content = 1\n", "true or false"),
        ("[network\n", "cannot read"),
    ],
)
def test_bad_config_file_is_a_config_error_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        NetworkPolicy.from_user(environ={}, config_file=config)
    assert str(config) in str(info.value)


def test_plan_engine_host_outside_the_allowlist_is_a_plan_error_at_the_spec() -> None:
    text = OPENAI_PLAN.format(url="http://10.1.2.3:8000/v1")
    with pytest.raises(PlanError) as info:
        load_plan_text(text, file="p.yaml", network=NetworkPolicy())
    assert (info.value.line, info.value.column) == (4, 9)
    assert "--allow-host 10.1.2.3:8000" in str(info.value)
    loaded = load_plan_text(text, network=NetworkPolicy.of(["10.1.2.3:8000"]))
    assert loaded.engine_spec == "openai:http://10.1.2.3:8000/v1#m"
    assert load_plan_text(text, network=NetworkPolicy(), overridden=["engine"]).name == "plan"


def test_plan_vllm_model_from_the_hub_needs_the_hub_host_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    text = OPENAI_PLAN.replace("'openai:{url}#m'", "'vllm:org/some-model'")
    with pytest.raises(PlanError, match=r"--allow-host huggingface\.co:443"):
        load_plan_text(text, network=NetworkPolicy())
    assert (
        load_plan_text(text, network=NetworkPolicy.of(["huggingface.co"])).engine_spec
        == "vllm:org/some-model"
    )


def test_plan_with_local_engines_needs_no_allow(tmp_path: Path) -> None:
    for spec in ("llamacpp:default", "test:", f"replay:{tmp_path}/r.jsonl", f"vllm:{tmp_path}"):
        text = OPENAI_PLAN.replace("'openai:{url}#m'", f"'{spec}'")
        assert load_plan_text(text, network=NetworkPolicy()).engine_spec == spec


@pytest.mark.parametrize("spec", ["bogus:x", "openai:ftp://h/v1#m", "openai:http://h/v1", "gpt4"])
def test_unknown_or_malformed_engine_spec_fails_load_at_its_position(spec: str) -> None:
    text = OPENAI_PLAN.replace("'openai:{url}#m'", f"'{spec}'")
    with pytest.raises(PlanError, match="invalid engine spec") as info:
        load_plan_text(text, file="p.yaml", network=NetworkPolicy(), overridden=["engine"])
    assert (info.value.line, info.value.column) == (4, 9)


def test_plan_telemetry_endpoint_without_otlp_exporter_is_refused() -> None:
    text = "apiVersion: agentflow/v1\nkind: Plan\ntelemetry:\n  endpoint: http://h/v1/traces\nsteps:\n  - id: s\n    prompt: hi\n"
    with pytest.raises(PlanError, match="only used by 'exporter: otlp'"):
        load_plan_text(text, network=NetworkPolicy.of(["*"]))


def test_console_exporter_may_capture_content_without_allow() -> None:
    text = (
        "apiVersion: agentflow/v1\nkind: Plan\ntelemetry:\n  exporter: console\n  capture_content: true\n"
        "steps:\n  - id: s\n    prompt: hi\n"
    )
    assert load_plan_text(text, network=NetworkPolicy()).plan.telemetry.capture_content
