"""The engine's process contract: FLNET_* variables, loud failures when one is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flnet.runtime import EngineConfig, EngineConfigError
from flnet.runtime.backoff import Backoff
from flnet.runtime.settings import REQUIRED_ENV


def _env(tmp_path: Path) -> dict[str, str]:
    credential = tmp_path / "credential"
    credential.write_text("secret-token\n", encoding="utf-8")
    (tmp_path / "tool").mkdir(exist_ok=True)
    return {
        "FLNET_RUN": "tenants/acme/runs/r1",
        "FLNET_CONTROL_ADDRESS": "unix:///tmp/control.sock",
        "FLNET_CREDENTIAL_FILE": str(credential),
        "FLNET_TOOL_DIR": str(tmp_path / "tool"),
        "FLNET_ENTRYPOINT": "tool.py:main",
    }


def test_from_env(tmp_path: Path) -> None:
    config = EngineConfig.from_env(_env(tmp_path))
    assert config.run == "tenants/acme/runs/r1"
    assert config.control_address == "unix:///tmp/control.sock"
    assert config.entrypoint == "tool.py:main"
    assert config.input_dir == Path("/mnt/input")
    assert config.output_dir == Path("/mnt/output")
    assert config.reconnect_timeout == 300.0
    assert config.read_credential() == "secret-token"


def test_optional_variables(tmp_path: Path) -> None:
    env = _env(tmp_path) | {
        "FLNET_INPUT_DIR": str(tmp_path / "in"),
        "FLNET_OUTPUT_DIR": str(tmp_path / "out"),
        "FLNET_RECONNECT_TIMEOUT": "12.5",
        "FLNET_LOG_LEVEL": "debug",
    }
    config = EngineConfig.from_env(env)
    assert config.input_dir == tmp_path / "in"
    assert config.output_dir == tmp_path / "out"
    assert config.reconnect_timeout == 12.5
    assert config.log_level == 10


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_each_missing_variable_is_named(tmp_path: Path, missing: str) -> None:
    env = _env(tmp_path)
    del env[missing]
    with pytest.raises(EngineConfigError, match=f"{missing} is not set"):
        EngineConfig.from_env(env)


def test_all_missing_variables_are_named_at_once() -> None:
    with pytest.raises(EngineConfigError) as caught:
        EngineConfig.from_env({})
    for name in REQUIRED_ENV:
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FLNET_RUN", "runs/r1", "is not 'tenants/{tenant}/runs/{run}'"),
        # Ids the control plane never mints (the contracts' grammar, flnet.resource_names).
        ("FLNET_RUN", "tenants/acme/runs/R_1", "is not 'tenants/{tenant}/runs/{run}'"),
        ("FLNET_RUN", "tenants/a_b/runs/r1", "is not 'tenants/{tenant}/runs/{run}'"),
        ("FLNET_CREDENTIAL_FILE", "/nonexistent/credential", "not a readable file"),
        ("FLNET_TOOL_DIR", "/nonexistent/tool", "not a directory"),
        ("FLNET_RECONNECT_TIMEOUT", "soon", "not a number"),
        ("FLNET_LOG_LEVEL", "LOUD", "not a logging level"),
    ],
)
def test_malformed_variables(tmp_path: Path, name: str, value: str, message: str) -> None:
    env = _env(tmp_path) | {name: value}
    with pytest.raises(EngineConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        EngineConfig.from_env(env)


def test_credential_is_given_one_way(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="exactly one"):
        EngineConfig(run="tenants/t/runs/r", control_address="x:1", tool_dir=tmp_path)
    config = EngineConfig(
        run="tenants/t/runs/r", control_address="x:1", tool_dir=tmp_path, credential=" tok "
    )
    assert config.read_credential() == "tok"
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    config = EngineConfig(
        run="tenants/t/runs/r", control_address="x:1", tool_dir=tmp_path, credential_file=empty
    )
    with pytest.raises(EngineConfigError, match="empty"):
        config.read_credential()


def test_python_m_flnet_runtime_fails_loudly_without_its_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLNET_")}
    result = subprocess.run(
        [sys.executable, "-m", "flnet.runtime"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "flnet.runtime: error: FLNET_RUN is not set" in result.stderr
    for name in REQUIRED_ENV:
        assert name in result.stderr


def test_backoff_doubles_to_two_seconds_with_jitter_within_a_budget() -> None:
    backoff = Backoff(budget=1000.0)
    delays = [backoff.next_delay() for _ in range(8)]
    nominal = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for delay, expected in zip(delays, nominal, strict=True):
        assert delay is not None
        assert expected * 0.8 <= delay <= expected * 1.2
    backoff.reset()
    first = backoff.next_delay()
    assert first is not None and first <= 0.12
    assert Backoff(budget=0.0).next_delay() is None
