"""`python -m flnet.orchestrator` settings: flags, their environment variables, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from flnet.orchestrator.settings import Settings

ISSUER = {"FLNET_OIDC_ISSUER": "https://issuer.example"}


def test_defaults_pick_the_process_backend_and_its_engine(tmp_path: Path) -> None:
    settings = Settings.load(["--data-dir", str(tmp_path)], ISSUER)
    assert settings.backend == "process"
    assert settings.engine_command is None  # the backend's own default
    assert settings.docker_url == "unix:///var/run/docker.sock"
    assert settings.detach_on_stop is False
    assert settings.cgroups is True
    assert settings.auth.issuer == "https://issuer.example"


def test_identity_is_required(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        Settings.load(["--data-dir", str(tmp_path)], {})
    assert exit_info.value.code == 2
    assert "FLNET_OIDC_ISSUER is not set" in capsys.readouterr().err


def test_the_docker_socket_follows_docker_host(tmp_path: Path) -> None:
    environ = {**ISSUER, "DOCKER_HOST": "unix:///run/user/docker.sock"}
    settings = Settings.load(["--data-dir", str(tmp_path)], environ)
    assert settings.docker_url == "unix:///run/user/docker.sock"
    # Only the docker backend needs a unix socket there.
    Settings.load(["--data-dir", str(tmp_path)], {**ISSUER, "DOCKER_HOST": "tcp://127.0.0.1:2375"})


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
        ],
        ISSUER,
    )
    environment = Settings.load(
        [],
        {
            **ISSUER,
            "FLNET_DATA_DIR": str(tmp_path),
            "FLNET_ORCHESTRATOR_BACKEND": "docker",
            "FLNET_DOCKER_URL": "unix:///run/docker.sock",
            "FLNET_DETACH_ON_STOP": "1",
            "FLNET_ENGINE_COMMAND": "python3 -m flnet.runtime",
        },
    )
    assert flags == environment
    assert flags.backend == "docker"
    assert flags.docker_url == "unix:///run/docker.sock"
    assert flags.detach_on_stop is True
    assert flags.engine_command == ("python3", "-m", "flnet.runtime")


def test_cgroups_are_turned_off_by_flag_or_environment(tmp_path: Path) -> None:
    flags = Settings.load(["--data-dir", str(tmp_path), "--no-cgroups"], ISSUER)
    environment = Settings.load(
        [], {**ISSUER, "FLNET_DATA_DIR": str(tmp_path), "FLNET_NO_CGROUPS": "1"}
    )
    assert flags == environment
    assert flags.cgroups is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "docker", "--docker-url", "tcp://127.0.0.1:2375"], "is not 'unix:///"),
        (["--detach-on-stop"], "--detach-on-stop needs --backend docker"),
        (["--engine-command", ""], "--engine-command must not be empty"),
        (["--backend", "kubernetes"], "invalid choice"),
    ],
)
def test_bad_settings_exit_with_usage(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        Settings.load(["--data-dir", str(tmp_path), *argv], {})
    assert info.value.code == 2
    assert message in capsys.readouterr().err
