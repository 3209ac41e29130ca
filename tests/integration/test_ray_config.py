"""Ray steps, tools and replicas fail as values with a fix when Ray is installed but not initialized."""

from __future__ import annotations

import functools

import pytest

from agentflow import Err, run
from agentflow.engines import RayEngine, TestEngine
from agentflow.errors import ConfigError
from agentflow.executors import Task, TaskStatus, ToolRegistry, tool

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'agentflow[ray]')")

from agentflow.executors._ray import RayExecutor, on_ray, ray_step  # noqa: E402


@ray_step
def double(x: int) -> int:
    return 2 * x


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(autouse=True)
def no_ray_runtime() -> None:
    if ray.is_initialized():
        pytest.skip("a Ray runtime is running in this process")


async def test_ray_step_is_a_config_error_value_when_ray_is_not_initialized() -> None:
    out = await run(double(2))
    assert isinstance(out, Err) and isinstance(out.error, ConfigError)
    assert "ray.init()" in out.error.message
    assert out.error.where == "double"


async def test_on_ray_is_a_config_error_value_when_ray_is_not_initialized() -> None:
    out = await run(on_ray(lambda: double(1), name="sub"))
    assert isinstance(out, Err) and isinstance(out.error, ConfigError)


async def test_ray_executor_reports_the_missing_runtime_as_the_task_error() -> None:
    report = await RayExecutor(ToolRegistry([add])).run([Task(1, "add", (1, 2))])
    result = report.results[1]
    assert result.status is TaskStatus.ERROR
    assert result.error is not None and "ray.init()" in str(result.error)


async def test_ray_engine_start_raises_config_error_when_ray_is_not_initialized() -> None:
    with pytest.raises(ConfigError, match=r"ray\.init\(\)"):
        await RayEngine.start(functools.partial(TestEngine))
