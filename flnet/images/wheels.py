"""The wheels a tool image installs: the flnet wheel built from this repository (cached by
the digest of its sources) and its runtime dependencies for the image's Python."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from flnet.sources import source_sha256, tool_files

from .engine import CONTEXT_EPOCH, ImageError, locked, run_command, source_date_epoch


def source_root() -> Path | None:
    """The repository this flnet was imported from (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]  # <root>/flnet/images/wheels.py
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("project", {}).get("name") == "flnet" else None


def _wheel_sources(root: Path) -> list[Path]:
    """What `pip wheel` reads: pyproject.toml, the readme and license files, and the
    directories of every package (tool.setuptools.package-dir), relative to `root`."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    tops = {"pyproject.toml"}
    readme = project.get("project", {}).get("readme")
    if isinstance(readme, str):
        tops.add(readme)
    for pattern in ("LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*", "setup.py", "setup.cfg"):
        tops.update(p.name for p in root.glob(pattern))
    package_dirs = project.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    tops.update(str(d).split("/")[0] for d in package_dirs.values())
    files: list[Path] = []
    for top in sorted(tops):
        path = root / top
        if path.is_dir():
            files += [Path(top) / f for f in tool_files(path)]
        elif path.is_file():
            files.append(Path(top))
    return files


async def flnet_wheel_path(cache: Path, source: Path | None = None) -> Path:
    """The flnet wheel of the sources at `source` (default `source_root()`), built with
    `pip wheel --no-deps` in a copy of them and cached by their digest."""
    root = source or source_root()
    if root is None:
        raise ImageError(
            "flnet is not installed from its repository: give the flnet wheel to use "
            "(flnet_wheel=..., `flnet image build --flnet-wheel`)"
        )
    files = await asyncio.to_thread(_wheel_sources, root)
    digest = (await asyncio.to_thread(source_sha256, root, files))[:16]
    where = cache / "wheels" / "flnet"
    target = where / digest
    if found := await asyncio.to_thread(_wheels_in, target):
        return found[0]
    async with locked(cache / "wheels.lock"):
        if found := await asyncio.to_thread(_wheels_in, target):
            return found[0]
        work = Path(await asyncio.to_thread(_fresh_dir, where))
        try:
            copy = work / "src"
            await asyncio.to_thread(_copy_files, root, files, copy)
            out = work / "out"
            env = dict(os.environ, SOURCE_DATE_EPOCH=str(source_date_epoch(CONTEXT_EPOCH)))
            pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
            wheel = [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out)]
            try:
                await run_command([*wheel, "--no-build-isolation", str(copy)], env=env)
            except ImageError:  # no setuptools here: let pip fetch the build backend
                await run_command([*wheel, str(copy)], env=env)
            built = await asyncio.to_thread(_wheels_in, out)
            if len(built) != 1:
                raise ImageError(f"pip wheel made {[p.name for p in built]}, not one flnet wheel")
            await asyncio.to_thread(out.rename, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        await asyncio.to_thread(_keep_newest, where, 5)
        return target / built[0].name


def _wheels_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("flnet-*.whl")) if directory.is_dir() else []


def _fresh_dir(parent: Path) -> str:
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="build-", dir=parent)


def _copy_files(root: Path, files: Iterable[Path], to: Path) -> None:
    for f in files:
        (to / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, to / f)


def _keep_newest(directory: Path, count: int) -> None:
    entries = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in entries[:-count]:
        shutil.rmtree(old, ignore_errors=True)


def runtime_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist without extras: what `pip install flnet` installs."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(name).decode()
    requirements = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement, _, marker = line.removeprefix("Requires-Dist:").partition(";")
            if "extra" not in marker:
                requirements.append(requirement.strip())
    return requirements


async def vendor_wheels(
    cache: Path, requirements: Sequence[str], python: str, machine: str, out: Path
) -> None:
    """Puts into `out` the wheels that install `requirements` on CPython `python` for
    `machine`: from the cache (wheels/cp<XY>-<machine>/) when it has them, else downloaded
    from the package index into the cache first."""
    tag = f"cp{python.replace('.', '')}"
    store = cache / "wheels" / f"{tag}-{machine}"
    for directory in (store, out):
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    target = [
        "--only-binary=:all:",
        *(f"--platform={p}_{machine}" for p in ("manylinux2014", "manylinux_2_17")),
        f"--python-version={python}",
        "--implementation=cp",
        *requirements,
    ]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "--quiet"]
    offline = [*pip, "--isolated", "--no-index", f"--find-links={store}", f"--dest={out}"]
    if requirements:
        try:
            await run_command([*offline, *target])
            return
        except ImageError:
            pass
        async with locked(cache / "wheels.lock"):
            await run_command([*pip, f"--dest={store}", *target])
        await run_command([*offline, *target])
