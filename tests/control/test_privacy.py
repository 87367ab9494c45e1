"""The control plane's data is its user's only (every tenant's configs, inputs, outputs and
audit trail are in it): folders 0700, files 0600 whatever the umask; and the engine socket
admits this user and the engine group (FLNET_ENGINE_GID) only (flnet.control.engine_socket)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.control.app import ControlApp
from flnet.control.database import make_private, upgrade
from flnet.control.engine_socket import prepare_folder
from flnet.control.settings import ControlSettings, default_database_url
from tests.conftest import TENANT, clients_for, control_app, control_settings
from tests.privacy import (
    ENGINE,
    NOBODY,
    acting_as,
    connect_as,
    mode,
    open_dir,
    require_root,
    umask,
)

CSV = b"a,b\n1,2\n"


def open_entries(root: Path) -> list[tuple[str, str]]:
    """Everything under `root` (itself included) that another user could use: folders not
    0700, files not 0600 (the socket is checked by itself)."""
    found = []
    for entry in [root, *root.rglob("*")]:
        m = mode(entry)
        if (entry.is_dir() and m != 0o700) or (entry.is_file() and m != 0o600):
            found.append((str(entry.relative_to(root)), oct(m)))
    return found


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder every user may enter, for data dirs whose own mode is what protects them."""
    path = open_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def started(settings: ControlSettings) -> ControlApp:
    app = control_app(settings)
    await app.start("127.0.0.1:0")
    return app


@pytest.fixture
async def control_in(tmp_path: Path) -> AsyncIterator[list[ControlApp]]:
    """Control planes a test starts (`started`), stopped at its end."""
    apps: list[ControlApp] = []
    yield apps
    for app in apps:
        await app.stop(0.5)


async def test_everything_the_control_plane_writes_is_its_users_only(
    tmp_path: Path, control_in: list[ControlApp]
) -> None:
    with umask(0):  # the most open: only the modes the control plane gives count
        app = await started(control_settings(tmp_path))
        control_in.append(app)
        api = clients_for(f"127.0.0.1:{app.port}")
        await api.upload(CSV)
        upload = (
            await api.artifacts.StartUpload(
                asv.StartUploadRequest(parent=TENANT, total_size=len(CSV), filename="b.csv")
            )
        ).upload
        await api.artifacts.UploadChunk(
            asv.UploadChunkRequest(name=upload.name, offset=0, data=CSV[:3])
        )
        await api.channel.close()
    data = app.settings.data_dir
    assert open_entries(data) == []
    db = Path(app.settings.resolved_database_url.removeprefix("sqlite+aiosqlite:///"))
    if db.is_relative_to(data):  # SQLite: the database, its write-ahead log and shared memory
        assert {p.name for p in db.parent.glob("flnet.db*")} == {
            "flnet.db",
            "flnet.db-wal",
            "flnet.db-shm",
        }
    stored = sorted(p.name for p in (data / "artifacts").rglob("*") if p.is_file())
    if stored:  # files, not S3: the blob and the upload's piece
        assert stored == sorted([hashlib.sha256(CSV).hexdigest(), upload.name.rsplit("/")[-1]])
    assert mode(app.settings.socket_path) == 0o600
    assert mode(app.settings.socket_path.parent) == 0o700


async def test_what_an_earlier_version_left_open_is_closed(
    tmp_path: Path, control_in: list[ControlApp]
) -> None:
    data = tmp_path / "control"
    (data / "sockets").mkdir(parents=True)
    for path in (data, data / "sockets"):
        path.chmod(0o755)
    for name in ("flnet.db", "flnet.db-wal"):
        (data / name).write_bytes(b"")
        (data / name).chmod(0o644)
    control_in.append(await started(control_settings(tmp_path)))
    assert mode(data) == 0o700
    assert mode(data / "sockets") == 0o700
    if control_in[0].engine.dialect.name == "sqlite":
        assert mode(data / "flnet.db") == mode(data / "flnet.db-wal") == 0o600


async def test_flnet_db_upgrade_makes_a_private_database(tmp_path: Path) -> None:
    with umask(0):
        await upgrade(default_database_url(tmp_path / "new" / "data"))
    assert mode(tmp_path / "new" / "data" / "flnet.db") == 0o600
    assert mode(tmp_path / "new") == mode(tmp_path / "new" / "data") == 0o700
    make_private("postgresql+asyncpg://flnet@localhost/flnet")  # nothing to do, no error


async def test_other_local_users_cannot_connect_to_the_engine_socket(
    open_parent: Path, control_in: list[ControlApp]
) -> None:
    require_root()
    app = await started(control_settings(open_parent))
    control_in.append(app)
    socket = app.settings.socket_path
    assert socket.is_relative_to(open_parent)
    assert connect_as(socket, 0, 0) == "connected"
    assert connect_as(socket, NOBODY, NOBODY) == "EACCES"
    assert connect_as(socket, ENGINE, ENGINE) == "EACCES"  # no engine group configured


@pytest.fixture
def long_data_dir(open_parent: Path) -> Iterator[Path]:
    """A data dir too deep for a unix socket path: its socket goes to /tmp/flnet-<digest>/,
    a place every user may enter."""
    data = open_parent / ("d" * 100) / "data"
    yield data
    socket = control_settings(open_parent, data_dir=data).socket_path
    if socket.parent.is_symlink():
        socket.parent.unlink()
    shutil.rmtree(socket.parent, ignore_errors=True)


async def test_the_engine_group_may_connect_and_no_one_else(
    open_parent: Path, long_data_dir: Path, control_in: list[ControlApp]
) -> None:
    require_root()
    app = await started(control_settings(open_parent, data_dir=long_data_dir, engine_gid=ENGINE))
    control_in.append(app)
    socket = app.settings.socket_path
    assert not socket.is_relative_to(open_parent)
    folder = os.stat(socket.parent)
    assert (stat.S_IMODE(folder.st_mode), folder.st_gid) == (0o710, ENGINE)
    assert (mode(socket), socket.stat().st_gid) == (0o660, ENGINE)
    assert connect_as(socket, ENGINE, ENGINE) == "connected"
    assert connect_as(socket, NOBODY, NOBODY) == "EACCES"
    assert connect_as(socket, ENGINE, NOBODY) == "EACCES"  # the group decides, not the uid


async def test_a_socket_folder_of_another_user_is_refused(
    open_parent: Path, long_data_dir: Path
) -> None:
    """In /tmp anyone may make the folder first, then swap in a socket of theirs that
    collects every engine's run credential."""
    require_root()
    settings = control_settings(open_parent, data_dir=long_data_dir)
    folder = settings.socket_path.parent
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    app = control_app(settings)
    with pytest.raises(PermissionError, match="refusing to put the engine socket there"):
        await app.start("127.0.0.1:0")
    assert not settings.socket_path.exists()
    folder.rmdir()
    folder.symlink_to(open_parent)  # a link to a folder of ours is refused as well
    with pytest.raises(PermissionError, match="symbolic link"):
        await control_app(settings).start("127.0.0.1:0")


def test_the_engine_group_is_given_by_root_or_a_member(open_parent: Path) -> None:
    require_root()
    folder = open_parent / "sockets"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    with acting_as(NOBODY):
        with pytest.raises(PermissionError, match="FLNET_ENGINE_GID"):
            prepare_folder(folder / "control.sock", ENGINE)
        prepare_folder(folder / "control.sock", None)  # for nobody only: fine
    assert mode(folder) == 0o700


def test_the_engine_group_comes_from_flnet_engine_gid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLNET_OIDC_ISSUER", "https://id.example")
    monkeypatch.setenv("FLNET_ENGINE_GID", "10001")
    assert ControlSettings.from_env().engine_gid == ENGINE
    monkeypatch.delenv("FLNET_ENGINE_GID")
    assert ControlSettings.from_env().engine_gid is None
    for wrong in ("flnet", "-1", "1.5"):
        monkeypatch.setenv("FLNET_ENGINE_GID", wrong)
        with pytest.raises(ValueError, match=r"FLNET_ENGINE_GID: .* is not a group id"):
            ControlSettings.from_env()
