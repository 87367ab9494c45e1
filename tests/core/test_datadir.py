"""FLNet's folders are 0700 and its files 0600 whatever the umask (flnet.datadir)."""

from __future__ import annotations

import os
from pathlib import Path

from flnet.datadir import open_private, own_private_dir, private_dir, write_private
from tests.privacy import NOBODY, mode, require_root, umask


def test_missing_parents_are_private_too(tmp_path: Path) -> None:
    with umask(0):
        made = private_dir(tmp_path / "a" / "b" / "c")
    assert made.is_dir()
    assert [mode(p) for p in (made, made.parent, made.parent.parent)] == [0o700] * 3


def test_existing_folders_are_left_alone_by_private_dir(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    private_dir(tmp_path / "shared" / "mine")
    assert mode(tmp_path / "shared") == 0o755
    assert mode(tmp_path / "shared" / "mine") == 0o700


def test_an_own_folder_is_closed_when_an_earlier_version_left_it_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    (data / "flnet.db").write_bytes(b"")
    own_private_dir(data)
    assert mode(data) == 0o700


def test_an_own_folder_of_another_user_is_theirs_to_decide(tmp_path: Path) -> None:
    require_root()
    data = tmp_path / "theirs"
    data.mkdir(mode=0o755)
    os.chown(data, NOBODY, NOBODY)
    own_private_dir(data)
    assert mode(data) == 0o755


def test_private_files_whatever_the_umask(tmp_path: Path) -> None:
    with umask(0):
        write_private(tmp_path / "new" / "endpoints.json", "{}")
        os.close(open_private(tmp_path / "log", os.O_WRONLY))
    assert mode(tmp_path / "new" / "endpoints.json") == 0o600
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "log") == 0o600
    assert (tmp_path / "new" / "endpoints.json").read_text() == "{}"
