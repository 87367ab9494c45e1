"""What the engine gets: rlimits applied by the exec wrapper (where runs get no cgroup; the
cgroup limits: test_limits.py), the FLNET_* environment contract, and the credential as a
0400 file only (never in argv, environment or logs); and the limits exec wrapper on its
own."""

from __future__ import annotations

import json
import logging
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.limits import ADDRESS_SPACE_HEADROOM
from tests.orchestrator.helpers import TIMEOUT, Orchestrator, StartOrchestrator

MiB = 1024 * 1024


def observations(orch: Orchestrator, run: str) -> dict[str, object]:
    return json.loads((orch.workdir(run) / "output" / "observations.json").read_text())  # type: ignore[no-any-return]


async def test_without_a_cgroup_rlimits_apply_and_memory_is_an_address_space_cap(
    start_orchestrator: StartOrchestrator,
) -> None:
    orch = await start_orchestrator(keep_workdirs=True, cgroups=False)
    limits = pb.Limits(memory_bytes=256 * MiB, pids=64, open_files=128, cpu_millis=500)
    container = await orch.launch(
        """
        import json, os, pathlib, resource
        seen = {
            "as": resource.getrlimit(resource.RLIMIT_AS),
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "nice": os.nice(0),
            "cgroup": pathlib.Path("/proc/self/cgroup").read_text(),
        }
        # What a Python process maps without using it fits below the cap...
        import mmap
        mmap.mmap(-1, 1024 * 1024 * 1024).close()
        try:
            block = bytearray(8 * 1024 * 1024 * 1024)
            seen["allocated"] = True
        except MemoryError:
            seen["allocated"] = False
        out = pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "observations.json")
        out.write_text(json.dumps(seen))
        bytearray(8 * 1024 * 1024 * 1024)  # ...a runaway allocation does not: uncaught
        """,
        limits=limits,
    )

    exited = await orch.exited(container.run)

    seen = observations(orch, container.run)
    # The memory limit plus the documented headroom: a cap against runaway allocations.
    assert seen["as"] == [256 * MiB + ADDRESS_SPACE_HEADROOM] * 2
    # RLIMIT_NPROC counts the whole user id, so the process backend leaves it alone.
    assert seen["nproc"] == list(resource.getrlimit(resource.RLIMIT_NPROC))
    assert seen["nofile"] == [128, 128]
    assert seen["nice"] == 10  # CPU below the machine's capacity: best-effort niceness
    assert seen["cgroup"] == Path("/proc/self/cgroup").read_text()  # the orchestrator's
    assert seen["allocated"] is False
    # A MemoryError under RLIMIT_AS is a plain non-zero exit: nothing was OOM-killed.
    assert exited.exit_cause == pb.EXIT_CAUSE_EXITED
    assert exited.exit_code == 1
    assert exited.last_output_lines[-1] == "MemoryError"


async def test_zero_limits_leave_the_inherited_ones(orch_keep: Orchestrator) -> None:
    container = await orch_keep.launch(
        """
        import json, os, pathlib, resource
        seen = {"as": resource.getrlimit(resource.RLIMIT_AS),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE), "nice": os.nice(0)}
        pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "observations.json").write_text(
            json.dumps(seen))
        """
    )
    await orch_keep.exited(container.run)

    seen = observations(orch_keep, container.run)
    assert seen["as"] == list(resource.getrlimit(resource.RLIMIT_AS))
    assert seen["nofile"] == list(resource.getrlimit(resource.RLIMIT_NOFILE))
    assert seen["nice"] == 0


ENV_PROBE = """
    import json, os, pathlib, stat
    credential = pathlib.Path(os.environ["FLNET_CREDENTIAL_FILE"])
    seen = {
        "env": dict(os.environ),
        "cmdline": pathlib.Path("/proc/self/cmdline").read_bytes().decode(errors="replace"),
        "credential": credential.read_text(),
        "credential_mode": stat.S_IMODE(credential.stat().st_mode),
        "cwd": os.getcwd(),
        "input_is_dir": os.path.isdir(os.environ["FLNET_INPUT_DIR"]),
    }
    pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "observations.json").write_text(json.dumps(seen))
    print("engine done")
"""


async def test_engine_environment_and_credential_file(
    start_orchestrator: StartOrchestrator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-run-credential-7f1c"
    monkeypatch.setenv("ORCHESTRATOR_PRIVATE_TOKEN", "do-not-leak")
    caplog.set_level(logging.DEBUG)
    orch: Orchestrator = await start_orchestrator(keep_workdirs=True)
    run = orch.run_name("acme")
    tool_dir = orch.tool(ENV_PROBE)

    container = await orch.launch(
        tool_dir,
        run=run,
        tenant="tenants/acme",
        control_address="127.0.0.1:50051",
        credential=secret,
        environment={"TOOL_SETTING": "42"},
    )
    exited = await orch.exited(container.run)
    assert exited.exit_code == 0, exited.last_output_lines

    seen = observations(orch, run)
    env = seen["env"]
    assert isinstance(env, dict)
    workdir = orch.workdir(run)
    assert env["FLNET_RUN"] == run
    assert env["FLNET_CONTROL_ADDRESS"] == "127.0.0.1:50051"
    assert env["FLNET_CREDENTIAL_FILE"] == str(workdir / "credential")
    # The run's own copy of the source directory it was given.
    assert env["FLNET_TOOL_DIR"] == str(workdir / "tool")
    copied = sorted(p.name for p in (workdir / "tool").iterdir())
    assert copied == sorted(p.name for p in tool_dir.iterdir())
    assert env["FLNET_ENTRYPOINT"] == "tool.py:main"
    assert env["FLNET_INPUT_DIR"] == str(workdir / "input")
    assert env["FLNET_OUTPUT_DIR"] == str(workdir / "output")
    assert env["TOOL_SETTING"] == "42"
    assert "PATH" in env
    assert "ORCHESTRATOR_PRIVATE_TOKEN" not in env  # only an allowlist is passed on
    assert seen["credential"] == secret
    assert seen["credential_mode"] == 0o400
    assert stat.S_IMODE((workdir / "credential").stat().st_mode) == 0o400
    assert seen["cwd"] == str(workdir)
    assert seen["input_is_dir"] is True
    # The credential travels as a file only.
    assert secret not in json.dumps(env)
    assert secret not in str(seen["cmdline"])
    assert "flnet.orchestrator.limits" not in str(seen["cmdline"])  # exec'd away
    assert secret not in caplog.text
    assert secret not in (workdir / "engine.log").read_text()


async def test_engine_command_failure_is_an_exit_with_its_message(
    start_orchestrator: StartOrchestrator, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-engine")
    orch: Orchestrator = await start_orchestrator(engine_command=[missing])

    container = await orch.launch("pass")
    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_EXITED
    assert exited.exit_code == 127
    assert "cannot execute" in exited.last_output_lines[-1]


def run_limits(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flnet.orchestrator.limits", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_limits_wrapper_execs_the_command_with_limits() -> None:
    probe = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"
    done = run_limits("--open-files", "64", "--", sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(64, 64)"


def test_limits_wrapper_caps_the_address_space_when_told(tmp_path: Path) -> None:
    probe = "import resource; print(resource.getrlimit(resource.RLIMIT_AS))"
    done = run_limits("--address-space-bytes", str(2**32), "--", sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"({2**32}, {2**32})"


def test_limits_wrapper_refuses_to_run_outside_its_cgroup(tmp_path: Path) -> None:
    done = run_limits("--cgroup", str(tmp_path / "no-such-cgroup"), "--", "true")
    assert done.returncode == 127
    assert "cannot join the run's cgroup" in done.stderr


def test_limits_wrapper_reports_what_it_cannot_execute(tmp_path: Path) -> None:
    done = run_limits("--", str(tmp_path / "missing"))
    assert done.returncode == 127
    assert "cannot execute" in done.stderr
    assert run_limits("--pids", "1").returncode == 2  # no "--"
