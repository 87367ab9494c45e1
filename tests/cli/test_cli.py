"""The `flnet` command line against a stack started by `flnet up`, all as separate
processes, the way a user runs them."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.cli.main import build_parser
from flnet.cli.stack import Stack, free_port
from flnet.client.filenames import output_filename
from flnet.client.tokens import unverified_claims
from flnet.orchestrator.link import ATTACHED_LINE
from tests.conftest import EXAMPLES
from tests.export.crate import check_crate
from tests.privacy import umask_of

FLNET = [sys.executable, "-m", "flnet.cli.main"]


def flnet(
    data: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*FLNET, "--data-dir", str(data), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    if check and done.returncode != 0:
        pytest.fail(f"flnet {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done


def flnet_json(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(flnet(data, "-o", "json", *args, env=env).stdout)


def wait_for(path: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    up = subprocess.Popen(
        [*FLNET, "--data-dir", str(data), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(data / "endpoints.json")
        # Before any login, nothing but health answers.
        refused = flnet(data, "tool", "list", check=False)
        assert refused.returncode == 2
        assert "not logged in: run `flnet login`" in refused.stdout + refused.stderr
        flnet(data, "login", "--dev")
        yield data
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0, up.stdout.read() if up.stdout else ""
    assert not (data / "endpoints.json").exists()  # a clean stop unpublishes the stack


@pytest.mark.timeout(180)
def test_register_submit_watch_download(stack: Path, tmp_path: Path) -> None:
    tool = EXAMPLES / "csv_stats"
    registered = flnet_json(stack, "tool", "register", str(tool))
    assert registered["toolVersion"]["name"] == "tenants/default/tools/csv-stats/versions/1.0.0"
    listed = flnet_json(stack, "tool", "list")
    assert [t["name"] for t in listed] == ["tenants/default/tools/csv-stats"]

    watched = flnet(
        stack,
        "-o",
        "json",
        "run",
        "submit",
        "csv-stats",
        "-i",
        f"data={tool / 'sample.csv'}",
        "-c",
        "percentiles=[10,90]",
        "--watch",
    )
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    states = [e["stateChange"]["toState"] for e in events if "stateChange" in e]
    assert states[-1] == "RUN_STATE_FINISHED"
    run = events[0]["run"]

    got = flnet_json(stack, "run", "get", run)
    assert got["state"] == "RUN_STATE_FINISHED"
    assert got["config"]["percentiles"] == [10, 90]
    out = flnet_json(stack, "run", "outputs", run, "--download", str(tmp_path / "out"))
    [stats] = out["outputs"]
    data = (tmp_path / "out" / "stats.json").read_bytes()  # named for its media type
    assert hashlib.sha256(data).hexdigest() == stats["sha256"]
    assert set(json.loads(data)["columns"]) == {
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "species",
    }

    runs = flnet_json(stack, "run", "list", "--state", "finished")
    assert [r["name"] for r in runs] == [run]
    again = flnet(stack, "run", "reproduce", run, "--watch")
    assert again.returncode == 0
    # Not a terminal: progress (with its message) is printed as lines as it comes.
    assert again.stdout.splitlines()[0].startswith("watching tenants/default/runs/")
    assert "progress 100% done" in again.stdout
    rough_edges(stack, run)


def rough_edges(stack: Path, ended: str) -> None:
    """Issue 13's CLI points, on a stack with an ended run."""
    # Global options after the command too; JSON keeps integers integers.
    after = flnet(stack, "run", "get", ended, "-o", "json")
    assert '"percentiles": [10, 90]' in after.stdout
    # -o json: errors are one JSON object on stderr, stdout carries results only.
    nowhere = "0" * 20  # a whole run id
    missing = flnet(stack, "run", "get", nowhere, "-o", "json", check=False)
    assert (missing.returncode, missing.stdout) == (2, "")
    error = json.loads(missing.stderr)["error"]
    assert error["code"] == "NOT_FOUND" and nowhere in error["message"]
    tool = EXAMPLES / "csv_stats"
    bad = flnet(
        stack, "-o", "json", "run", "submit", "csv-stats", "-i", f"data={tool / 'sample.csv'}",
        "-c", "percentiles=oops", check=False,
    )  # fmt: skip
    assert (bad.returncode, bad.stdout) == (2, "")
    error = json.loads(bad.stderr)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "CONFIG_INVALID")
    assert [v["field"] for v in error["violations"]] == ["run.config.percentiles"]
    # In text, the fields at fault follow the status line.
    bad = flnet(stack, "run", "submit", "csv-stats", "-c", "percentiles=oops", check=False)
    assert "INVALID_ARGUMENT" in bad.stderr and "  run.config.percentiles: " in bad.stderr
    # A missing input file: one line.
    lost = flnet(stack, "run", "submit", "csv-stats", "-i", "data=no/such.csv", check=False)
    assert lost.returncode == 2 and "Traceback" not in lost.stderr
    assert " ".join(lost.stderr.split()) == "error No such file or directory: no/such.csv"
    # A run is named by an unambiguous start of its id; run list shows whole ids.
    run_id = ended.rsplit("/", 1)[1]
    assert json.loads(flnet(stack, "-o", "json", "run", "get", run_id[:8]).stdout)["name"] == ended
    unknown = flnet(stack, "run", "get", "zz", check=False)
    assert unknown.returncode == 2 and "has an id starting with 'zz'" in unknown.stderr
    assert run_id in flnet(stack, "run", "list", env={"COLUMNS": "40"}).stdout
    # Cancelling an ended run says so and fails.
    cancel = flnet(stack, "run", "cancel", ended, check=False)
    assert cancel.returncode == 2
    assert "had already ended (FINISHED): nothing to cancel" in " ".join(cancel.stderr.split())
    # flnet token: the access token alone, which other clients send as it is.
    token = flnet(stack, "token").stdout.strip()
    endpoints = json.loads((stack / "endpoints.json").read_text())
    with grpc.insecure_channel(endpoints["control"]) as channel:
        listed = rsg.RunServiceStub(channel).ListRuns(
            rs.ListRunsRequest(parent="tenants/default"),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    assert ended in [r.name for r in listed.runs]
    # A reader that closed the pipe ends the command quietly.
    closed = subprocess.Popen(
        [*FLNET, "--data-dir", str(stack), "-o", "json", "run", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert closed.stdout is not None and closed.stderr is not None
    closed.stdout.close()
    assert closed.wait(timeout=60) == 0
    assert closed.stderr.read() == b""


def test_errors_are_reported_with_their_code(stack: Path) -> None:
    result = flnet(stack, "run", "get", "0" * 20, check=False)
    assert result.returncode == 2
    assert "NOT_FOUND" in result.stderr and not result.stdout
    result = flnet(stack, "run", "submit", "csv-stats", check=False)
    assert result.returncode == 2


def test_every_option_says_what_it_does() -> None:
    def silent(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from silent(child, f"{path} {name}")
            elif not action.help and action.dest != "help":
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(silent(build_parser(), "flnet")) == []


def test_global_options_follow_the_command_too(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    done = subprocess.run(
        [*FLNET, "run", "list", "--data-dir", str(elsewhere), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    error = json.loads(done.stderr)["error"]
    assert f"{elsewhere / 'endpoints.json'} is missing" in error["message"]
    assert "flnet up" in error["message"]


def test_commands_without_a_stack_say_so(tmp_path: Path) -> None:
    result = flnet(tmp_path, "run", "list", check=False)
    assert result.returncode == 2
    assert "flnet up" in result.stderr
    # A stack that died without unpublishing its endpoints: one line, not a gRPC error.
    gone = f"127.0.0.1:{free_port()}"
    endpoints = {"control": gone, "gateway": gone, "ui": f"http://{gone}/"}
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))
    stale = flnet(tmp_path, "run", "list", check=False)
    assert stale.returncode == 2 and "Traceback" not in stale.stderr
    assert " ".join(stale.stderr.split()) == (
        f"error the stack that served {tmp_path} is gone (its endpoints.json is stale): "
        "start one with `flnet up`"
    )


@pytest.mark.timeout(180)
def test_dev_session_config_and_tests_without_restart(stack: Path) -> None:
    tool = EXAMPLES / "logreg"
    dev = subprocess.Popen(
        [
            *FLNET,
            "--data-dir",
            str(stack),
            "dev",
            "connect",
            str(tool),
            "-i",
            f"data={tool / 'sample.csv'}",
            "-c",
            "epochs=5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert dev.stdout is not None
        session = ""
        for line in dev.stdout:
            if line.startswith("development session"):
                session = line.split()[2]
                break
        assert session
        deadline = time.monotonic() + 30
        while flnet_json(stack, "run", "get", session)["state"] != "RUN_STATE_INITIALIZED":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        updated = flnet_json(stack, "dev", "config", session, "epochs=3", "learning_rate=0.1")
        assert updated["config"]["epochs"] == 3
        bad = flnet(stack, "dev", "config", session, "epochs=0", check=False)
        assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr

        finished = []
        for _ in range(2):  # two executions by the same, still running engine process
            result = flnet(stack, "-o", "json", "dev", "test", session, "--watch")
            events = [json.loads(line) for line in result.stdout.splitlines()]
            run = flnet_json(stack, "run", "get", events[0]["run"])
            assert run["state"] == "RUN_STATE_FINISHED"
            assert run["devSessionRun"].endswith(session)
            assert run["config"]["epochs"] == 3
            metrics = [e for e in events if "metric" in e and e["metric"]["name"] == "loss"]
            assert len(metrics) == 3
            finished.append(run["name"])
        assert len(set(finished)) == 2
        # The metric history: JSON (integers stay integers), CSV, a table.
        losses = flnet_json(stack, "run", "metrics", finished[0], "--name", "loss")
        assert [(m["name"], m["step"]) for m in losses] == [("loss", s) for s in (1, 2, 3)]
        assert all(isinstance(m["value"], float | int) and m["time"] for m in losses)
        csv_lines = flnet(stack, "run", "metrics", finished[0], "--csv").stdout.splitlines()
        assert csv_lines[0] == "name,step,value,unit,time"
        assert {line.split(",")[0] for line in csv_lines[1:]} == {"loss", "accuracy"}
        table = flnet(stack, "run", "metrics", finished[0], "--name", "accuracy").stdout
        assert "accuracy" in table and "loss" not in table
        # Ctrl-C stops watching, not the run, and says how to cancel it.
        watching = subprocess.Popen(
            [*FLNET, "--data-dir", str(stack), "run", "watch", session],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watching.stdout is not None
        assert watching.stdout.readline().startswith(f"watching tenants/default/runs/{session}")
        watching.send_signal(signal.SIGINT)
        _, said = watching.communicate(timeout=30)
        assert watching.returncode == 130
        assert f"goes on (`flnet run cancel {session}` cancels it)" in " ".join(said.split())
        assert flnet_json(stack, "run", "get", session)["state"] == "RUN_STATE_INITIALIZED"
        assert dev.poll() is None
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
    final = flnet_json(stack, "run", "get", session)
    assert final["state"] == "RUN_STATE_CANCELLED"
    assert os.path.exists(stack / "flnet.db")


@pytest.mark.timeout(180)
def test_demo_finishes_with_verified_outputs(tmp_path: Path) -> None:
    repo = EXAMPLES.parent.parent
    result = subprocess.run(
        [*FLNET, "--data-dir", str(tmp_path / "demo"), "demo"],
        check=False,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED" in result.stdout
    assert result.stdout.count("verified") == 2  # model and report match their sha256
    assert not (tmp_path / "demo" / "endpoints.json").exists()


def test_components_serve_alone(tmp_path: Path) -> None:
    """`flnet control serve` and `flnet orchestrator serve` run as they would in a deployment,
    trusting the issuer FLNET_OIDC_ISSUER names (the orchestrator attaches with its client of
    it), and stop cleanly on SIGTERM."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    oidc = subprocess.Popen(
        [sys.executable, "-m", "flnet.issuer", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(f"{issuer}/healthz")
        serve_components(tmp_path, {"FLNET_OIDC_ISSUER": issuer})
    finally:
        oidc.terminate()
        oidc.wait(timeout=30)


def wait_http(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.1)


def serve_components(tmp_path: Path, env: dict[str, str]) -> None:
    port_file = tmp_path / "port"
    control = subprocess.Popen(
        [
            *FLNET,
            "--data-dir",
            str(tmp_path),
            "control",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        wait_for(port_file)
        port = port_file.read_text()
        assert umask_of(control.pid) == 0o077  # what it creates without a mode is private
        flnet(tmp_path, "login", "--dev", env=env)
        address = f"127.0.0.1:{port}"
        listed = flnet_json(tmp_path, "--address", address, "tool", "list", env=env)
        assert listed == []
        dev = json.loads((tmp_path / "oidc" / "dev-credentials.json").read_text())
        client = {
            "FLNET_ORCHESTRATOR_CLIENT_ID": dev["orchestrator_client_id"],
            "FLNET_ORCHESTRATOR_CLIENT_SECRET": dev["orchestrator_client_secret"],
        }
        orchestrator = subprocess.Popen(
            [*FLNET, "--data-dir", str(tmp_path), "orchestrator", "serve", "--control", address,
             "--name", "alone", "--labels", "site=here"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env, **client},
        )  # fmt: skip
        assert orchestrator.stderr is not None
        for line in orchestrator.stderr:
            if ATTACHED_LINE in line:
                break
        assert umask_of(orchestrator.pid) == 0o077
        [attached] = flnet_json(tmp_path, "--address", address, "orchestrator", "list", env=env)
        assert (attached["name"], attached["state"], attached["labels"]) == (
            "orchestrators/alone",
            "ORCHESTRATOR_STATE_ATTACHED",
            {"site": "here"},
        )
        orchestrator.send_signal(signal.SIGTERM)
        assert orchestrator.wait(timeout=30) == 0
        quota = flnet_json(
            tmp_path, "--address", address, "quota", "set", "default", "--runs", "3", env=env
        )
        assert (quota["tenant"], quota["maxRuns"]) == ("tenants/default", 3)
        shown = flnet(tmp_path, "--address", address, "quota", "get", env=env).stdout
        assert "runs           0 of 3" in shown
    finally:
        control.send_signal(signal.SIGTERM)
        assert control.wait(timeout=30) == 0


@pytest.mark.timeout(180)
def test_watch_survives_a_control_plane_crash(stack: Path) -> None:
    """kill -9 of the control plane under `flnet up`: the supervisor restarts it, the engine
    reconnects, and `flnet run watch` resumes where it was, without gap or duplicate."""
    behave = EXAMPLES.parent.parent / "tests" / "fixtures" / "tools" / "behave"
    flnet(stack, "tool", "register", str(behave))
    run = flnet_json(stack, "run", "submit", "behave", "-c", "mode=sleep", "-c", "seconds=6")
    watcher = subprocess.Popen(
        [*FLNET, "--data-dir", str(stack), "-o", "json", "run", "watch", run["name"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while flnet_json(stack, "run", "get", run["name"])["state"] != "RUN_STATE_RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    control = json.loads((stack / "endpoints.json").read_text())["control"]
    pid = subprocess.run(
        ["pgrep", "-f", f"flnet.control --listen {control}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    os.kill(int(pid), signal.SIGKILL)
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert events[-1]["stateChange"]["toState"] == "RUN_STATE_FINISHED"


def test_flnet_up_runs_an_issuer_for_flnet_login(stack: Path) -> None:
    endpoints = json.loads((stack / "endpoints.json").read_text())
    assert endpoints["oidc"].startswith("http://127.0.0.1:")
    secrets = json.loads((stack / "oidc" / "dev-credentials.json").read_text())
    logged_in = flnet_json(
        stack, "login", "--client-credentials", "--client-id", "orchestrator",
        "--client-secret", secrets["orchestrator_client_secret"],
    )  # fmt: skip
    assert logged_in["issuer"] == endpoints["oidc"]
    assert logged_in["scope"] == "orchestrator"
    assert (stack / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_a_second_stack_on_the_same_data_dir_is_refused(stack: Path) -> None:
    """`flnet demo` beside a running `flnet up` used to start a second stack and delete the
    first one's endpoints.json."""
    endpoints = (stack / "endpoints.json").read_text()
    for command in (["demo"], ["up"]):
        refused = flnet(stack, *command, check=False)
        assert refused.returncode == 2
        said = " ".join(refused.stderr.split())
        assert f"a stack already serves {stack}" in said and "another --data-dir" in said
    assert (stack / "endpoints.json").read_text() == endpoints
    flnet(stack, "run", "list")  # the first one serves on


def test_a_restarted_stack_keeps_its_issuer_and_the_cached_login(tmp_path: Path) -> None:
    """Every restart used to give the development issuer a new address, and cached logins
    "token issuer not accepted"."""
    data = tmp_path / "data"
    issuers = []
    for restart in range(2):
        up = subprocess.Popen([*FLNET, "--data-dir", str(data), "up"], stdout=subprocess.DEVNULL)
        try:
            wait_for(data / "endpoints.json")
            issuers.append(json.loads((data / "endpoints.json").read_text())["oidc"])
            if restart == 0:
                flnet(data, "login", "--dev")
            flnet(data, "tool", "list")  # the login of the first start, after the restart
        finally:
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0
    assert issuers[0] == issuers[1]


def test_login_dev_signs_in_through_the_client_it_is_given(stack: Path) -> None:
    flnet(stack, "login", "--dev", "--client-id", "flnet-ui")
    cached = json.loads((stack / "credentials.json").read_text())
    assert cached["client_id"] == "flnet-ui"
    claims = unverified_claims(cached["access_token"])
    assert "flnet-ui" in (claims.get("client_id"), claims.get("azp"))
    unknown = flnet(stack, "login", "--dev", "--client-id", "nobody", check=False)
    assert unknown.returncode == 2 and "unknown client_id" in unknown.stderr


def test_login_dev_asks_for_the_scope_it_is_given(stack: Path) -> None:
    logged_in = flnet_json(stack, "login", "--dev", "--scope", "runs:read")
    assert logged_in["scope"] == "runs:read"
    cached = json.loads((stack / "credentials.json").read_text())
    assert unverified_claims(cached["access_token"])["scope"] == "runs:read"
    flnet(stack, "run", "list")
    refused = flnet(stack, "tool", "list", check=False)
    assert refused.returncode != 0
    assert "PERMISSION_DENIED" in refused.stdout + refused.stderr


def test_flnet_up_keeps_the_platforms_data_private(stack: Path) -> None:
    """Every tenant's data is in the data dir: nothing in it is open to other users, what
    flnet up writes (logs, endpoints.json) nor what its components do (database, keys,
    socket, Envoy's access log, under the umask they are given)."""
    flnet(stack, "run", "list")  # a request: the gateway's access log, the audit trail
    entries = [stack, *stack.rglob("*")]
    assert {p.name for p in entries} >= {
        "endpoints.json",
        "control.log",
        "gateway-access.log",
        "flnet.db",
        "flnet.db-wal",
        "control.sock",
        "envoy.yaml",
        "credentials.json",
    }
    opened = [(str(p), oct(mode)) for p in entries if (mode := p.lstat().st_mode) & 0o077]
    assert opened == []


def test_flnet_up_with_docker_admits_the_containers_group_to_the_socket(tmp_path: Path) -> None:
    """The engines of the docker backend run as 10001:10001: the control plane's socket
    admits that group (FLNET_ENGINE_GID); with the process backend, nobody but the user."""

    def engine_gid(stack: Stack) -> str | None:
        [control] = [c for c in stack.components if c.name == "control"]
        return control.env.get("FLNET_ENGINE_GID")

    assert engine_gid(Stack(tmp_path / "docker", backend="docker")) == "10001"
    assert engine_gid(Stack(tmp_path / "swarm", backend="swarm")) == "10001"
    assert engine_gid(Stack(tmp_path / "process")) is None


def test_flnet_up_with_docker_keeps_a_warm_pool(tmp_path: Path) -> None:
    """Standby containers for the next runs (orchestrator.docker_pool): docker only."""

    def warm_pool(stack: Stack) -> str | None:
        [orchestrator] = [c for c in stack.components if c.name == "orchestrator"]
        return orchestrator.env.get("FLNET_WARM_POOL")

    assert warm_pool(Stack(tmp_path / "docker", backend="docker")) == "2"
    assert warm_pool(Stack(tmp_path / "swarm", backend="swarm")) is None
    assert warm_pool(Stack(tmp_path / "process")) is None


def test_an_external_issuer_replaces_the_embedded_one(tmp_path: Path) -> None:
    external = "https://id.example/realms/flnet"
    stack = Stack(tmp_path, extra_env={"FLNET_OIDC_ISSUER": external})
    assert [c.name for c in stack.components] == ["control", "gateway", "orchestrator"]
    assert stack.endpoints["oidc"] == external
    assert {c.env["FLNET_OIDC_ISSUER"] for c in stack.components} == {external}
    assert "--issuer-upstream" not in stack.components[-2].argv
    embedded = Stack(tmp_path / "embedded", oidc_port=free_port())
    assert [c.name for c in embedded.components] == ["oidc", "control", "gateway", "orchestrator"]
    # The embedded issuer's public URL is the gateway's /oidc: one origin for the browser.
    assert embedded.endpoints["oidc"] == f"http://{embedded.gateway}/oidc"
    assert embedded.endpoints["ui"] == f"http://{embedded.gateway}/"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("example", ["csv_stats", "logreg"])
def test_export_and_verified_reproduction_of_the_examples(
    stack: Path, tmp_path: Path, example: str
) -> None:
    """Each example tool runs, exports as an RO-Crate that validates (every file listed with
    its sha256), and reproduces with identical outputs (`run reproduce --verify`)."""
    tool = EXAMPLES / example
    name = flnet_json(stack, "tool", "register", str(tool))["toolVersion"]["name"]
    short = name.split("/tools/")[1].split("/")[0]
    flnet(stack, "run", "submit", short, "-i", f"data={tool / 'sample.csv'}", "--watch")
    [run] = flnet_json(stack, "run", "list")
    assert run["state"] == "RUN_STATE_FINISHED"
    crate = tmp_path / "run.zip"
    exported = flnet_json(stack, "run", "export", run["name"], str(crate))
    assert exported["path"] == str(crate) and crate.stat().st_size == exported["sizeBytes"]
    entities = check_crate(crate, tmp_path / "crate")
    action = entities[f"#{run['name']}"]
    assert action["actionStatus"] == "http://schema.org/CompletedActionStatus"
    outputs = {o["outputName"]: o["sha256"] for o in run["outputs"]}
    assert {entities[r["@id"]]["sha256"] for r in action["result"]} == set(outputs.values())

    verified = flnet(stack, "-o", "json", "run", "reproduce", run["name"], "--verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["verified"] is True
    assert {o["output"] for o in report["outputs"]} == set(outputs)
    assert all(o["match"] and o["original"] == outputs[o["output"]] for o in report["outputs"])
    assert report["run"]["reproduceOf"] == run["name"]


def test_db_upgrade_creates_and_reports_the_schema(tmp_path: Path) -> None:
    first = flnet_json(tmp_path, "db", "upgrade")
    assert first["revision"] and (tmp_path / "flnet.db").exists()
    assert flnet_json(tmp_path, "db", "upgrade") == first  # idempotent
    bad = flnet(tmp_path, "db", "upgrade", "--database-url", "nosuchdb://x", check=False)
    assert bad.returncode == 2
    assert "not a database URL this FLNet can use" in bad.stdout + bad.stderr
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://flnet:secret-pw@127.0.0.1:{port}/flnet"
    down = flnet(tmp_path, "db", "upgrade", "--database-url", url, check=False)
    assert down.returncode == 2
    assert "cannot reach the database" in down.stdout + down.stderr
    assert "secret-pw" not in down.stdout + down.stderr


@pytest.mark.parametrize("broken", ["database", "bucket"])
def test_flnet_up_says_which_component_failed_and_why(tmp_path: Path, broken: str) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    env, why = {
        "database": (
            {"FLNET_DATABASE_URL": f"postgresql+asyncpg://flnet:secret-pw@{nowhere}/flnet"},
            "cannot reach the database postgresql+asyncpg://flnet:***@",
        ),
        "bucket": (
            {
                "FLNET_ARTIFACT_URL": "s3://nobucket/flnet",
                "FLNET_S3_ENDPOINT": f"http://{nowhere}",
                "AWS_ACCESS_KEY_ID": "key",
                "AWS_SECRET_ACCESS_KEY": "secret-pw",
            },
            f"FLNET_ARTIFACT_URL: bucket 'nobucket' at http://{nowhere} is not usable",
        ),
    }[broken]
    down = flnet(tmp_path / "data", "up", env=env, check=False)
    assert down.returncode == 2 and "Traceback" not in down.stderr
    said = down.stderr.splitlines()
    assert said[0] == "error control did not start: it exited with code 1."
    assert said[1] == f"The last lines of {tmp_path / 'data' / 'logs' / 'control.log'}:"
    assert why in said[-1]
    assert "secret-pw" not in down.stderr
    assert not (tmp_path / "data" / "endpoints.json").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--replicas", "0"], {}, "--replicas: at least 1"),
        (
            ["--replicas", "2"],
            {"FLNET_DATABASE_URL": "sqlite+aiosqlite:///x.db"},
            "replicas share a PostgreSQL database",
        ),
    ],
)
def test_flnet_up_refuses_replicas_it_cannot_run(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = flnet(tmp_path, "up", *args, check=False, env=env)
    assert done.returncode == 2
    assert message in " ".join((done.stdout + done.stderr).split())
    assert not (tmp_path / "endpoints.json").exists()


@pytest.mark.parametrize(
    ("output_name", "media_type", "filename"),
    [
        ("stats", "application/json", "stats.json"),
        ("table", "text/csv; charset=utf-8", "table.csv"),
        ("notes", "text/plain", "notes.txt"),
        ("weights", "application/octet-stream", "weights"),
        ("model.pt", "application/octet-stream", "model.pt"),
        ("plot", "image/png", "plot.png"),
        ("report.html", "text/html", "report.html"),
    ],
)
def test_downloaded_outputs_are_named_for_their_media_type(
    output_name: str, media_type: str, filename: str
) -> None:
    artifact = ap.Artifact(output_name=output_name, media_type=media_type)
    assert output_filename(artifact) == filename


KMEANS_YAML = """\
name: kmeans
version: 1.0.0
kind: training
description: K-means on the numeric columns of a CSV.
entrypoint: tool.py:main
config_schema:                 # what the Config dataclass cannot say; the rest is derived
  properties:
    k: {minimum: 1}
inputs:
  - {name: data, media_type: text/csv, required: true}
outputs:
  - {name: centroids, media_type: application/json, required: true}
"""
KMEANS_TOOL = """\
import csv
import json
from dataclasses import dataclass

from flnet.runtime import Context, InvalidInput


@dataclass
class Config:
    k: int = 2
    rounds: int = 10


def main(ctx: Context[Config]) -> None:
    with ctx.inputs["data"].open() as f:
        rows = [[float(v) for v in row.values()] for row in csv.DictReader(f)]
    if len(rows) < ctx.config.k:
        raise InvalidInput(f"{len(rows)} rows cannot make {ctx.config.k} clusters", input="data")
    centroids = rows[: ctx.config.k]
    for round_ in range(ctx.config.rounds):
        groups = [[] for _ in centroids]
        for row in rows:
            nearest = min(
                range(len(centroids)),
                key=lambda i: sum((a - b) ** 2 for a, b in zip(row, centroids[i])),
            )
            groups[nearest].append(row)
        centroids = [
            [sum(col) / len(g) for col in zip(*g)] if g else c for g, c in zip(groups, centroids)
        ]
        ctx.metric("round", round_, step=round_)
        print(f"round {round_}")
    with ctx.outputs.open("centroids") as out:
        out.write(json.dumps(centroids))
"""
KMEANS_TEST = """\
from pathlib import Path

from flnet.runtime.testing import make_context
from tool import Config, main


def test_two_clusters(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("x,y\\n0,0\\n0,1\\n9,9\\n9,8\\n")
    ctx, recorded = make_context(
        Config(k=2), output_dir=tmp_path / "out", outputs=["centroids"], inputs={"data": data}
    )
    main(ctx)
    assert (tmp_path / "out" / "centroids").exists()
    assert len(recorded.metrics("round")) == 10
"""


@pytest.mark.timeout(180)
def test_a_newcomer_writes_tests_registers_and_runs_a_tool(stack: Path, tmp_path: Path) -> None:
    """The README's tool-author section, followed from an empty folder: tool.yaml without a
    full schema (derived from Config), a unit test with flnet.runtime.testing, check,
    register, run; a bad input is the user's fault."""
    tool = tmp_path / "kmeans"
    tool.mkdir()
    (tool / "tool.yaml").write_text(KMEANS_YAML)
    (tool / "tool.py").write_text(KMEANS_TOOL)
    (tool / "test_tool.py").write_text(KMEANS_TEST)
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tool)],
        cwd=tool, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    flnet(stack, "tool", "check", str(tool))
    schema = flnet_json(stack, "tool", "schema", str(tool))
    assert schema["properties"]["k"] == {"type": "integer", "default": 2, "minimum": 1}
    assert schema["additionalProperties"] is False
    flnet(stack, "tool", "register", str(tool))
    data = tmp_path / "points.csv"
    data.write_text("x,y\n0,0\n0,1\n9,9\n9,8\n")
    done = flnet(stack, "run", "submit", "kmeans", "-i", f"data={data}", "-c", "k=2", "--watch")
    assert "FINISHED" in done.stdout and "round 9" in done.stdout
    refused = flnet(
        stack, "run", "submit", "kmeans", "-i", f"data={data}", "-c", "k=0", check=False
    )
    assert refused.returncode == 2 and "run.config.k" in refused.stderr
    few = flnet(
        stack, "-o", "json", "run", "submit", "kmeans", "-i", f"data={data}", "-c", "k=9",
        "--watch", check=False,
    )  # fmt: skip
    assert few.returncode == 1
    ended = [json.loads(line) for line in few.stdout.splitlines()][-1]["stateChange"]
    assert ended["error"]["reason"] == "ERROR_REASON_INPUT_INVALID"
    assert ended["error"]["kind"] == "ERROR_KIND_USER"
    assert ended["error"]["message"] == "4 rows cannot make 9 clusters"


def test_an_older_data_dirs_issuer_client_attaches_the_orchestrator(tmp_path: Path) -> None:
    """Before orchestrators attached, the issuer's client of scope orchestrator was named
    control-plane: a data dir configured then keeps working."""
    (tmp_path / "oidc").mkdir(parents=True)
    old = {"control_plane_client_id": "control-plane", "control_plane_client_secret": "s"}
    (tmp_path / "oidc" / "dev-credentials.json").write_text(json.dumps(old))
    assert Stack(tmp_path)._orchestrator_client() == {
        "FLNET_ORCHESTRATOR_CLIENT_ID": "control-plane",
        "FLNET_ORCHESTRATOR_CLIENT_SECRET": "s",
    }
