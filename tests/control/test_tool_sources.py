"""Tool sources as uploaded archives (control.tool_sources): what `pack_source` makes, what
registration admits and records, the archives and entrypoints it refuses (and leaves nothing
unpacked for), versions stored from a host path, and gc keeping what a version names."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.control import tool_sources
from flnet.control.app import ControlApp
from flnet.control.tools import contract_sha256
from flnet.sources import MEDIA_TYPE, pack_source
from flnet.structs import dict_to_struct
from flnet.toolspec import load_tool_spec
from tests.conftest import (
    FIXTURES,
    TENANT,
    Clients,
    clients_for,
    packed,
    request_id,
    upload_messages,
)
from tests.identity import IDENTITY
from tests.retention.support import Gc, download, finished_run, gc_of
from tests.status import reason, violations

NOOP = FIXTURES / "tools" / "noop"
ARCHIVE = "tool_version.source.archive"
ENTRYPOINT = "tool_version.source.entrypoint"
TOOL_PY = b"def main(ctx):\n    pass\n"


@pytest.fixture
async def gc(control: ControlApp) -> AsyncIterator[Gc]:
    async with gc_of(control.settings) as side:
        yield side


# --- building archives -----------------------------------------------------------------------


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info


def tar_gz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A gzip-compressed tar of `members` (each with its data), built in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def with_tool(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """`members` beside a tool.py holding the entrypoint: only they can be wrong."""
    return tar_gz((member("tool.py", TOOL_PY), TOOL_PY), *members)


def link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = member(name, kind=kind)
    info.linkname = target
    return info, b""


def device(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = member(name, kind=kind)
    info.devmajor, info.devminor = 1, 3  # /dev/null
    return info, b""


def regular(name: str, data: bytes = TOOL_PY) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, data), data


def noop_version(archive: str, entrypoint: str = "tool.py:main") -> tp.ToolVersion:
    version = load_tool_spec(NOOP).with_source(archive)
    version.source.entrypoint = entrypoint
    return version


async def create(
    api: Clients, version: tp.ToolVersion, tool: str = "hostile"
) -> ts.CreateToolVersionResponse:
    return await api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/{tool}", tool_version=version)
    )


async def refused(
    api: Clients,
    version: tp.ToolVersion,
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
    tool: str = "hostile",
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(api, version, tool)
    assert raised.value.code() == code, raised.value.details()
    return raised.value


async def upload_source(api: Clients, data: bytes) -> str:
    return await api.upload(data, "source.tar.gz", MEDIA_TYPE)


def sources_dir(control: ControlApp) -> Path:
    return control.settings.data_dir / "sources"


def unpacked(control: ControlApp) -> list[str]:
    """What the control plane's snapshot directory holds (hidden scratch included)."""
    root = sources_dir(control)
    return sorted(os.listdir(root)) if root.is_dir() else []


def tool_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    directory = tmp_path / "tool"
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


def pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    pack_source(directory, buffer)
    return buffer.getvalue()


# --- pack_source -----------------------------------------------------------------------------


def test_pack_source_is_reproducible_and_follows_the_content(tmp_path: Path) -> None:
    directory = tool_dir(tmp_path, {"tool.py": TOOL_PY, "lib/helpers.py": b"X = 1\n"})
    first = pack(directory)
    os.utime(directory / "tool.py", (0, 1_000_000))  # times are not part of the archive
    assert pack(directory) == first
    moved = tmp_path / "elsewhere"
    shutil.copytree(directory, moved)
    assert pack(moved) == first  # neither is where the folder lies
    (directory / "lib" / "helpers.py").write_bytes(b"X = 2\n")
    changed = pack(directory)
    assert hashlib.sha256(changed).hexdigest() != hashlib.sha256(first).hexdigest()
    assert gzip.decompress(changed) != gzip.decompress(first)


def test_pack_source_leaves_out_caches_and_hidden_directories_and_keeps_exec_bits(
    tmp_path: Path,
) -> None:
    directory = tool_dir(
        tmp_path,
        {
            "tool.py": TOOL_PY,
            "run.sh": b"#!/bin/sh\n",
            "lib/util.py": b"",
            "lib/util.pyc": b"compiled",
            "__pycache__/tool.cpython-311.pyc": b"compiled",
            "lib/__pycache__/util.cpython-311.pyc": b"compiled",
            ".git/config": b"[core]\n",
            ".venv/bin/python": b"",
        },
    )
    (directory / "run.sh").chmod(0o755)
    (directory / "tool.py").chmod(0o600)
    with tarfile.open(fileobj=io.BytesIO(pack(directory)), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["lib/util.py", "run.sh", "tool.py"]
    assert all(m.isfile() for m in members.values())
    assert members["run.sh"].mode == 0o755
    assert members["tool.py"].mode == 0o644
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members.values()} == {
        (0, 0, "", "", 0)
    }


# --- what registration records ---------------------------------------------------------------


async def test_a_source_version_records_its_archives_sha256(
    control: ControlApp, api: Clients, tmp_path: Path
) -> None:
    copy = tmp_path / "noop"
    shutil.copytree(NOOP, copy, ignore=shutil.ignore_patterns("__pycache__"))
    data = packed(copy)
    artifact = (await api.artifacts.UploadInput(upload_messages(TENANT, data))).artifact
    archive = artifact.name
    spec = load_tool_spec(copy)
    res = await api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{TENANT}/tools/noop", tool_version=spec.with_source(archive)
        )
    )
    assert res.created
    version = res.tool_version
    assert version.source.archive == archive
    assert version.source.sha256 == artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert version.contract_sha256 == contract_sha256(version)
    # A sha256 the client claims is not taken: the server sets it.
    claimed = spec.with_source(archive)
    claimed.source.sha256 = "0" * 64
    again = await api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/noop", tool_version=claimed)
    )
    assert not again.created
    assert again.tool_version == version
    # The fixture folder itself packs to the same bytes: the same archive, the same contract.
    registered = await api.register(NOOP)
    assert registered == version
    # Registration keeps nothing unpacked; a run's snapshot is unpacked once, into
    # <data dir>/sources/<sha256>, modes tightened.
    assert unpacked(control) == []
    snapshot = await control.sources.snapshot(version)
    assert snapshot == sources_dir(control) / artifact.sha256
    assert await control.sources.snapshot(version) == snapshot
    assert unpacked(control) == [artifact.sha256]
    assert sorted(p.name for p in snapshot.iterdir()) == ["tool.py", "tool.yaml"]
    assert (snapshot / "tool.py").read_bytes() == (NOOP / "tool.py").read_bytes()
    assert (snapshot / "tool.py").stat().st_mode & 0o777 == 0o600


async def test_other_content_under_the_same_version_already_exists(
    api: Clients, tmp_path: Path
) -> None:
    copy = tmp_path / "noop"
    shutil.copytree(NOOP, copy, ignore=shutil.ignore_patterns("__pycache__"))
    first = await api.register(copy)
    (copy / "tool.py").write_text((NOOP / "tool.py").read_text() + "\n# changed\n")
    changed = await api.with_source(load_tool_spec(copy))
    assert changed.source.archive != first.source.archive
    error = await refused(api, changed, grpc.StatusCode.ALREADY_EXISTS, tool="noop")
    assert violations(error) == ["tool_version.version"]
    assert f"{first.name} exists with a different contract" in (error.details() or "")


async def test_an_executable_stays_executable_in_the_snapshot(
    control: ControlApp, api: Clients
) -> None:
    script = member("run.sh", b"#!/bin/sh\n")
    script.mode = 0o755
    data = with_tool((script, b"#!/bin/sh\n"))
    version = (await create(api, noop_version(await upload_source(api, data)))).tool_version
    snapshot = await control.sources.snapshot(version)
    assert (snapshot / "run.sh").stat().st_mode & 0o777 == 0o700
    assert (snapshot / "tool.py").stat().st_mode & 0o777 == 0o600


# --- archives that are no tool source --------------------------------------------------------


HOSTILE = {
    "symlink": (with_tool(link("evil.py", tarfile.SYMTYPE, "/etc/passwd")), "not a regular file"),
    "hard link": (with_tool(link("evil.py", tarfile.LNKTYPE, "tool.py")), "not a regular file"),
    "character device": (with_tool(device("null", tarfile.CHRTYPE)), "not a regular file"),
    "block device": (with_tool(device("disk", tarfile.BLKTYPE)), "not a regular file"),
    "fifo": (with_tool(device("pipe", tarfile.FIFOTYPE)), "not a regular file"),
    "absolute path": (with_tool(regular("/tmp/abs.py")), "not a relative path"),
    "parent segment": (with_tool(regular("../escape.py")), "not a relative path"),
    "nested parent segment": (with_tool(regular("lib/../../escape.py")), "not a relative path"),
    "not gzip": (b"a,b\n1,2\n", "not a gzip-compressed tar"),
    "gzip but no tar": (gzip.compress(b"a,b\n1,2\n" * 200, mtime=0), "not a gzip-compressed tar"),
    "truncated gzip": (with_tool(regular("big.py", os.urandom(4096)))[:-2000], "not a gzip"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_an_archive_that_is_no_tool_source_is_refused_and_nothing_unpacked(
    control: ControlApp, api: Clients, case: str
) -> None:
    data, message = HOSTILE[case]
    archive = await upload_source(api, data)
    error = await refused(api, noop_version(archive))
    assert violations(error) == [ARCHIVE]
    assert reason(error) == "INVALID_ARGUMENT"
    assert message in (error.details() or ""), error.details()
    assert unpacked(control) == []
    assert not (control.settings.data_dir / "escape.py").exists()
    # Nothing was stored either.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.GetTool(ts.GetToolRequest(name=f"{TENANT}/tools/hostile"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_more_entries_than_allowed_are_refused(
    control: ControlApp, api: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tool_sources, "MAX_SOURCE_ENTRIES", 3)
    at_limit = with_tool(regular("a.py"), regular("b.py"))
    await create(api, noop_version(await upload_source(api, at_limit)), tool="at-limit")
    over = with_tool(regular("a.py"), regular("b.py"), regular("c.py"))
    error = await refused(api, noop_version(await upload_source(api, over)))
    assert violations(error) == [ARCHIVE]
    assert "more than 3 entries" in (error.details() or "")
    assert unpacked(control) == []  # admission unpacks into scratch only


async def test_more_bytes_unpacked_than_allowed_are_refused(
    control: ControlApp, api: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tool_sources, "MAX_SOURCE_BYTES", 4096)
    bomb = with_tool(regular("zeros.bin", bytes(64 * 1024)))
    assert len(bomb) < 4096  # small as uploaded: only unpacking finds how big it is
    error = await refused(api, noop_version(await upload_source(api, bomb)))
    assert violations(error) == [ARCHIVE]
    assert "more than 4096 bytes unpacked" in (error.details() or "")
    assert unpacked(control) == []


async def test_an_archive_larger_than_allowed_is_refused_before_unpacking(
    control: ControlApp, api: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tool_sources, "MAX_SOURCE_BYTES", 2048)
    noise = with_tool(regular("noise.bin", os.urandom(4096)))
    error = await refused(api, noop_version(await upload_source(api, noise)))
    assert violations(error) == [ARCHIVE]
    assert "larger than 2048 bytes" in (error.details() or "")
    assert unpacked(control) == []


async def test_a_huge_pax_header_counts_as_unpacked_bytes(
    control: ControlApp, api: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tarfile reads a pax (or GNU long-name) header whole into memory: the decompressed
    stream is capped (files' bytes plus HEADER_BYTES), so a small upload cannot make the
    control plane hold gigabytes."""
    monkeypatch.setattr(tool_sources, "MAX_SOURCE_BYTES", 4096)
    monkeypatch.setattr(tool_sources, "HEADER_BYTES", 64 * 1024)
    info, data = regular("tool.py")
    info.pax_headers = {"comment": "x" * 256 * 1024}  # 256 KiB in memory, ~300 bytes uploaded
    bomb = tar_gz((info, data))
    assert len(bomb) < 4096
    error = await refused(api, noop_version(await upload_source(api, bomb)))
    assert violations(error) == [ARCHIVE]
    assert "more than 4096 bytes unpacked" in (error.details() or "")
    assert unpacked(control) == []


# --- entrypoints -----------------------------------------------------------------------------


ESCAPING = ["../other/tool.py:main", "./tool.py:main", "/abs/tool.py:main", "lib//tool.py:main"]


@pytest.mark.parametrize("entrypoint", ESCAPING)
async def test_a_source_entrypoint_outside_the_tool_is_refused(
    control: ControlApp, api: Clients, entrypoint: str
) -> None:
    archive = await upload_source(api, packed(NOOP))
    error = await refused(api, noop_version(archive, entrypoint))
    assert violations(error) == [ENTRYPOINT]
    assert "inside the tool" in (error.details() or "")
    assert unpacked(control) == []  # refused before the archive is even read


@pytest.mark.parametrize("entrypoint", ESCAPING)
async def test_an_image_entrypoint_outside_the_tool_is_refused(
    api: Clients, entrypoint: str
) -> None:
    version = load_tool_spec(NOOP).with_image("registry.test/noop:1", "sha256:" + "a" * 64)
    version.image.entrypoint = entrypoint
    error = await refused(api, version)
    assert violations(error) == ["tool_version.image.entrypoint"]
    assert "inside the tool" in (error.details() or "")


async def test_an_image_entrypoint_inside_the_tool_is_accepted(api: Clients) -> None:
    version = load_tool_spec(NOOP).with_image("registry.test/noop:1", "sha256:" + "a" * 64)
    version.image.entrypoint = "pkg/tool.py:main"
    res = await create(api, version, tool="image")
    assert res.created


async def test_an_entrypoint_absent_from_the_archive_is_refused(api: Clients) -> None:
    archive = await upload_source(api, with_tool(regular("lib/helpers.py")))
    for entrypoint in ("missing.py:main", "lib/tool.py:main", "lib.py:main"):
        error = await refused(api, noop_version(archive, entrypoint))
        assert violations(error) == [ENTRYPOINT]
        assert f"{entrypoint.rpartition(':')[0]} is not a file in the archive" in (
            error.details() or ""
        )
    # A directory is no entrypoint file either.
    dir_archive = await upload_source(
        api, tar_gz((member("pkg.py", kind=tarfile.DIRTYPE), b""), regular("tool.py"))
    )
    error = await refused(api, noop_version(dir_archive, "pkg.py:main"))
    assert violations(error) == [ENTRYPOINT]


async def test_an_entrypoint_in_a_subdirectory_is_accepted(api: Clients) -> None:
    archive = await upload_source(api, tar_gz(regular("pkg/tool.py")))
    res = await create(api, noop_version(archive, "pkg/tool.py:main"), tool="nested")
    assert res.created
    assert res.tool_version.source.entrypoint == "pkg/tool.py:main"


# --- which artifact ----------------------------------------------------------------------------


async def test_another_tenants_archive_is_refused(control: ControlApp, api: Clients) -> None:
    theirs = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(tenant="acme"))
    try:
        data = packed(NOOP)
        res = await theirs.artifacts.UploadInput(upload_messages("tenants/acme", data))
        archive = res.artifact.name
        assert archive.startswith("tenants/acme/artifacts/")
    finally:
        await theirs.channel.close()
    error = await refused(api, noop_version(archive))
    assert violations(error) == [ARCHIVE]
    assert "tenants/default" in (error.details() or "")
    assert unpacked(control) == []


async def test_an_archive_that_does_not_exist_is_refused(control: ControlApp, api: Clients) -> None:
    for archive in (f"{TENANT}/artifacts/{uuid.uuid4().hex[:20]}", "", "not/an/artifact"):
        error = await refused(api, noop_version(archive))
        assert violations(error) == [ARCHIVE], archive
    assert unpacked(control) == []


async def test_an_output_artifact_is_no_archive(control: ControlApp, api: Clients) -> None:
    version = await api.register(NOOP)
    run = await finished_run(api, version.name, await api.upload(b"a,b\n1,2\n"))
    [output] = (await api.runs.GetRun(rs.GetRunRequest(name=run))).run.outputs
    error = await refused(api, noop_version(output.name))
    assert violations(error) == [ARCHIVE]
    assert "uploaded input artifact" in (error.details() or "")


async def test_a_local_source_is_refused(control: ControlApp, api: Clients) -> None:
    version = load_tool_spec(NOOP).version
    version.local_source.path = str(NOOP)  # the oneof: no source any more
    version.local_source.entrypoint = "tool.py:main"
    error = await refused(api, version)
    assert violations(error) == ["tool_version.local_source"]
    assert "reads no host path" in (error.details() or "")
    assert unpacked(control) == []


async def test_a_version_stored_with_a_local_source_no_longer_runs(
    control: ControlApp, api: Clients
) -> None:
    legacy = load_tool_spec(NOOP).version
    legacy.local_source.path = str(NOOP)
    legacy.local_source.entrypoint = "tool.py:main"
    legacy.name = f"{TENANT}/tools/legacy/versions/{legacy.version}"
    legacy.contract_sha256 = contract_sha256(legacy)
    await control.store.tools.put_tool_version("default", "legacy", legacy)
    stored = await api.tools.GetToolVersion(ts.GetToolVersionRequest(name=legacy.name))
    assert stored.tool_version.local_source.path == str(NOOP)  # still readable
    data = await api.upload(b"a,b\n1,2\n")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(
            rs.CreateRunRequest(
                parent=TENANT,
                request_id=request_id(),
                run=rp.Run(
                    tool_version=legacy.name,
                    config=dict_to_struct({"rate": 0.5}),
                    inputs=[rp.RunInput(name="data", artifact=data)],
                ),
            )
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert violations(e.value) == ["run.tool_version"]
    assert "register the tool again" in (e.value.details() or "")
    listed = await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT))
    assert list(listed.runs) == []


# --- retention -------------------------------------------------------------------------------


async def test_gc_keeps_an_archive_a_version_names(api: Clients, gc: Gc) -> None:
    version = await api.register(NOOP)
    loose = await api.upload(b"uploaded with it, named by nothing\n")

    report = await gc.collect(days_later=30, telemetry_age=None)

    assert report.inputs.count == 1 and report.errors == []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await download(api, loose)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert await download(api, version.source.archive) == packed(NOOP)
    # Still what a new registration finds: the same archive, the same version.
    again = await api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{TENANT}/tools/noop",
            tool_version=noop_version(version.source.archive),
        )
    )
    assert not again.created and again.tool_version == version
    assert (await gc.collect(days_later=60, telemetry_age=None)).inputs.count == 0
