"""A run's work dir and the folders above it are the orchestrator's user's only, whatever
the umask: they hold the run credential, the inputs and the outputs (flnet.orchestrator.workdir)."""

from __future__ import annotations

from pathlib import Path

from flnet.orchestrator.backend import ExitCause, RunName
from flnet.orchestrator.workdir import WorkDir, runs_dir
from tests.privacy import mode, umask


def test_work_dirs_their_parents_and_records_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    workdir = WorkDir.of(runs_dir(data), RunName.parse("tenants/acme/runs/r1"))
    with umask(0):
        workdir.prepare("credential")
        workdir.record_stop_cause(ExitCause.STOPPED)
        workdir.mark_reported()
    folders = [data, data / "orchestrator", runs_dir(data), workdir.path, workdir.input]
    assert [mode(p) for p in folders] == [0o700] * len(folders)
    assert mode(workdir.credential) == 0o400
    assert mode(workdir.path / "stop-cause") == mode(workdir.path / "exit-reported") == 0o600
    assert workdir.stop_cause() == ExitCause.STOPPED and workdir.reported()
