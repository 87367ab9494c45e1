"""`python -m flnet.orchestrator` settings: flags, their environment variables, defaults; the
identity it registers with (name, capacity, labels) and its client at the OIDC issuer."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from flnet.orchestrator.settings import (
    DEFAULT_CONTROL,
    DEFAULT_RUN_SLOTS,
    Settings,
    default_name,
    host_memory,
    parse_labels,
)

CLIENT = {
    "FLNET_OIDC_ISSUER": "https://issuer.example",
    "FLNET_ORCHESTRATOR_CLIENT_ID": "edge",
    "FLNET_ORCHESTRATOR_CLIENT_SECRET": "edge-secret",
}


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.load(["--data-dir", str(tmp_path)], CLIENT)
    assert settings.control == DEFAULT_CONTROL == "127.0.0.1:50051"
    assert settings.data_dir == tmp_path
    assert settings.backend == "process"
    assert settings.engine_command is None  # the backend's own default
    assert settings.engine_address == ""  # what the control plane says
    assert settings.docker_url == "unix:///var/run/docker.sock"
    assert settings.detach_on_stop is False
    assert settings.cgroups is True
    assert (settings.kill_grace, settings.keep_workdirs, settings.log_level) == (5, False, "INFO")
    me = settings.identity
    assert me.name == default_name()
    assert me.cpu_millis == (os.cpu_count() or 1) * 1000
    assert me.memory_bytes == host_memory() > 0
    assert me.run_slots == DEFAULT_RUN_SLOTS == 16
    assert dict(me.labels) == {}
    assert me.hostname == socket.gethostname()
    assert (settings.issuer, settings.client_id, settings.client_secret) == (
        "https://issuer.example",
        "edge",
        "edge-secret",
    )
    assert settings.resource == ""
    assert "edge-secret" not in repr(settings)


def test_the_default_name_is_the_host_name_as_a_name() -> None:
    name = default_name()
    assert name == name.lower().strip("-")
    assert 1 <= len(name) <= 63
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_identity_and_client_from_flags_or_environment(tmp_path: Path) -> None:
    flags = Settings.load(
        [
            "--data-dir",
            str(tmp_path),
            "--control",
            "control.example:443",
            "--name",
            "edge-1",
            "--cpu-millis",
            "2500",
            "--memory-bytes",
            str(2**33),
            "--run-slots",
            "3",
            "--labels",
            "gpu, site=eu",
            "--engine-address",
            "10.0.0.1:50051",
        ],
        CLIENT,
    )
    environment = Settings.load(
        [],
        {
            **CLIENT,
            "FLNET_DATA_DIR": str(tmp_path),
            "FLNET_CONTROL_ADDRESS": "control.example:443",
            "FLNET_ORCHESTRATOR_NAME": "edge-1",
            "FLNET_ORCHESTRATOR_CPU_MILLIS": "2500",
            "FLNET_ORCHESTRATOR_MEMORY_BYTES": str(2**33),
            "FLNET_ORCHESTRATOR_RUN_SLOTS": "3",
            "FLNET_ORCHESTRATOR_LABELS": "gpu, site=eu",
            "FLNET_ENGINE_CONTROL_ADDRESS": "10.0.0.1:50051",
        },
    )
    assert flags == environment
    assert flags.control == "control.example:443"
    assert flags.engine_address == "10.0.0.1:50051"
    me = flags.identity
    assert (me.name, me.cpu_millis, me.memory_bytes, me.run_slots) == ("edge-1", 2500, 2**33, 3)
    assert dict(me.labels) == {"gpu": "", "site": "eu"}
    # Flags win over the environment.
    environ = {
        **CLIENT,
        "FLNET_DATA_DIR": str(tmp_path),
        "FLNET_ORCHESTRATOR_NAME": "edge-1",
        "FLNET_ORCHESTRATOR_RUN_SLOTS": "3",
    }
    both = Settings.load(["--name", "edge-2", "--run-slots", "5"], environ)
    assert (both.identity.name, both.identity.run_slots) == ("edge-2", 5)


def test_the_client_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    environ = {**CLIENT, "FLNET_ORCHESTRATOR_CLIENT_SECRET_FILE": str(secret)}
    del environ["FLNET_ORCHESTRATOR_CLIENT_SECRET"]
    environ["FLNET_ORCHESTRATOR_RESOURCE"] = "https://control.example"

    settings = Settings.load(["--data-dir", str(tmp_path)], environ)

    assert settings.client_secret == "from-a-file"
    assert settings.resource == "https://control.example"
    # The variable wins over the file.
    environ["FLNET_ORCHESTRATOR_CLIENT_SECRET"] = "from-the-variable"
    assert Settings.load(["--data-dir", str(tmp_path)], environ).client_secret == (
        "from-the-variable"
    )


@pytest.mark.parametrize(
    "missing",
    [
        "FLNET_OIDC_ISSUER",
        "FLNET_ORCHESTRATOR_CLIENT_ID",
        "FLNET_ORCHESTRATOR_CLIENT_SECRET",
    ],
)
def test_the_client_at_the_issuer_is_required(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, missing: str
) -> None:
    environ = {k: v for k, v in CLIENT.items() if k != missing}
    with pytest.raises(SystemExit) as exit_info:
        Settings.load(["--data-dir", str(tmp_path)], environ)
    assert exit_info.value.code == 2
    assert "the orchestrator needs its client at the OIDC issuer" in capsys.readouterr().err


def test_the_docker_socket_follows_docker_host(tmp_path: Path) -> None:
    environ = {**CLIENT, "DOCKER_HOST": "unix:///run/user/docker.sock"}
    settings = Settings.load(["--data-dir", str(tmp_path)], environ)
    assert settings.docker_url == "unix:///run/user/docker.sock"
    # Only the docker backend needs a unix socket there.
    Settings.load(["--data-dir", str(tmp_path)], {**CLIENT, "DOCKER_HOST": "tcp://127.0.0.1:2375"})


def test_docker_backend_from_flags_or_environment(tmp_path: Path) -> None:
    flags = Settings.load(
        [
            "--data-dir",
            str(tmp_path),
            "--backend",
            "docker",
            "--docker-url",
            "unix:///run/docker.sock",
            "--detach-on-stop",
            "--engine-command",
            "python3 -m flnet.runtime",
            "--warm-pool",
            "3",
        ],
        CLIENT,
    )
    environment = Settings.load(
        [],
        {
            **CLIENT,
            "FLNET_DATA_DIR": str(tmp_path),
            "FLNET_ORCHESTRATOR_BACKEND": "docker",
            "FLNET_DOCKER_URL": "unix:///run/docker.sock",
            "FLNET_DETACH_ON_STOP": "1",
            "FLNET_ENGINE_COMMAND": "python3 -m flnet.runtime",
            "FLNET_WARM_POOL": "3",
        },
    )
    assert flags == environment
    assert flags.warm_pool == 3
    assert flags.backend == "docker"
    assert flags.docker_url == "unix:///run/docker.sock"
    assert flags.detach_on_stop is True
    assert flags.engine_command == ("python3", "-m", "flnet.runtime")


def test_cgroups_are_turned_off_by_flag_or_environment(tmp_path: Path) -> None:
    flags = Settings.load(["--data-dir", str(tmp_path), "--no-cgroups"], CLIENT)
    environment = Settings.load(
        [], {**CLIENT, "FLNET_DATA_DIR": str(tmp_path), "FLNET_NO_CGROUPS": "1"}
    )
    assert flags == environment
    assert flags.cgroups is False


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("", {}),
        ("gpu", {"gpu": ""}),
        ("gpu,site=eu", {"gpu": "", "site": "eu"}),
        (" gpu , site=eu ,, ", {"gpu": "", "site": "eu"}),
        ("zone=eu-west.1_a", {"zone": "eu-west.1_a"}),
        ("site=eu,site=us", {"site": "us"}),  # the last wins
        ("x" * 63 + "=" + "y" * 63, {"x" * 63: "y" * 63}),
    ],
)
def test_labels_are_parsed(text: str, labels: dict[str, str]) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize(
    "text", ["GPU", "site=EU", "=eu", "site=e u", "a/b", "x" * 64, "site=" + "y" * 64, "k=v=w"]
)
def test_bad_labels_are_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"label .*: keys and values of a-z, 0-9"):
        parse_labels(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "docker", "--docker-url", "tcp://127.0.0.1:2375"], "is not 'unix:///"),
        (["--detach-on-stop"], "--detach-on-stop needs --backend docker"),
        (["--engine-command", ""], "--engine-command must not be empty"),
        (["--backend", "kubernetes"], "invalid choice"),
        (["--name", "Edge_1"], "--name: 1 to 63 lower-case letters, digits and '-'"),
        (["--name=-edge"], "--name: 1 to 63"),
        (["--name", "e" * 64], "--name: 1 to 63"),
        (["--run-slots", "0"], "--run-slots must be at least 1"),
        (["--cpu-millis", "-1"], "--cpu-millis must be at least 1"),
        (["--memory-bytes", "0"], "--memory-bytes must be at least 1"),
        (["--run-slots", "many"], "invalid int value"),
        (["--labels", "gpu,Site=eu"], "--labels: label 'Site=eu'"),
        (["--warm-pool", "-1"], "--warm-pool must not be negative"),
        (["--warm-pool", "some"], "--warm-pool: invalid int value"),
    ],
)
def test_bad_settings_exit_with_usage(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        Settings.load(["--data-dir", str(tmp_path), *argv], CLIENT)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_warm_pool_in_the_environment_exits_with_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        Settings.load(["--data-dir", str(tmp_path)], {**CLIENT, "FLNET_WARM_POOL": "many"})
    assert info.value.code == 2
    assert "--warm-pool: invalid int value: 'many'" in capsys.readouterr().err


def test_an_unreadable_secret_file_exits_with_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {k: v for k, v in CLIENT.items() if k != "FLNET_ORCHESTRATOR_CLIENT_SECRET"}
    environ["FLNET_ORCHESTRATOR_CLIENT_SECRET_FILE"] = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as info:
        Settings.load(["--data-dir", str(tmp_path)], environ)
    assert info.value.code == 2
    assert "FLNET_ORCHESTRATOR_CLIENT_SECRET_FILE: No such file or directory" in (
        capsys.readouterr().err
    )
