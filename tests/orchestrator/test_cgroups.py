"""Finding the cgroups of a process from what the kernel shows (/proc/<pid>/mountinfo and
/proc/<pid>/cgroup), for the hierarchies of cgroup v1 and v2 alike; and what a machine
without a usable cgroup falls back to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from flnet.orchestrator import cgroups
from flnet.orchestrator.backend import RunName

V1_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 29 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 29 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 29 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 29 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = """\
8:pids:/
4:memory:/process_api/c83e
2:cpu,cpuacct:/
0::/
"""
# A container's view: its hierarchy is mounted from its own cgroup down.
V2_MOUNTINFO = "40 29 0:30 /system.slice/flnet.service /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
V2_CGROUP = "0::/system.slice/flnet.service/orchestrator\n"


def test_cgroup_v1_hierarchies_and_our_place_in_them() -> None:
    mounts = list(cgroups._cgroup_mounts(V1_MOUNTINFO))
    own = cgroups._own_cgroups(V1_CGROUP)

    assert [(v, str(m), c) for v, m, _, c in mounts] == [
        (1, "/sys/fs/cgroup/memory", "memory"),
        (1, "/sys/fs/cgroup/pids", "pids"),
        (2, "/sys/fs/cgroup/unified", ""),
    ]
    assert own["memory"] == PurePosixPath("/process_api/c83e")
    assert own["cpuacct"] == PurePosixPath("/")
    assert cgroups._inside(Path("/sys/fs/cgroup/memory"), PurePosixPath("/"), own["memory"]) == (
        Path("/sys/fs/cgroup/memory/process_api/c83e")
    )


def test_cgroup_v2_mounted_from_below_the_root() -> None:
    [(version, mount, root, controller)] = cgroups._cgroup_mounts(V2_MOUNTINFO)
    own = cgroups._own_cgroups(V2_CGROUP)

    assert (version, controller) == (2, "")
    assert cgroups._inside(mount, root, own[""]) == Path("/sys/fs/cgroup/orchestrator")
    # A cgroup outside what is mounted cannot be reached.
    assert cgroups._inside(mount, root, PurePosixPath("/user.slice")) is None


def test_a_run_cgroup_is_named_after_its_run_below_each_parent(tmp_path: Path) -> None:
    found = cgroups.Cgroups(1, {"memory": tmp_path / "m", "pids": tmp_path / "p"})
    run = found.of(RunName.parse("tenants/acme/runs/r1"))

    assert run.join_dirs == (tmp_path / "m" / "acme_r1", tmp_path / "p" / "acme_r1")
    # Not a cgroup file system: nothing there, nothing counted.
    assert not run.exists()
    assert run.members() == []
    assert run.counters() == cgroups.Counters()


def test_the_pids_cgroup_of_a_process_that_is_gone_is_not_found() -> None:
    assert cgroups.pids_dir_of(2**22 + 1) is None  # above any pid_max


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root to see a refusal")
def test_without_the_right_to_make_cgroups_there_are_none(tmp_path: Path) -> None:
    """What the process backend then says before falling back to rlimits."""
    probe = (
        "import os, sys; from pathlib import Path; from flnet.orchestrator import cgroups; "
        "os.setgid(65534); os.setuid(65534); "
        f"found, why = cgroups.detect(Path({str(tmp_path)!r})); print(found, why)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.startswith("None cannot create ")
    assert done.stdout.rstrip().endswith("Permission denied")
