"""The warm pool's bookkeeping (docker_pool.WarmPool) and the shape a standby must share with
the run that takes it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from flnet.orchestrator.backend import Image, LaunchSpec, Limits, RunName
from flnet.orchestrator.docker_pool import Standby, WarmPool, shape_of
from flnet.orchestrator.workdir import WorkDir

IMAGE = "sha256:" + "a" * 64
SOCKET = Path("/run/flnet/control.sock")


BASE = LaunchSpec(run=RunName("acme", "r1"), artifact=Image(IMAGE), entrypoint="tool.py:main")


def spec(**fields: Any) -> LaunchSpec:
    return replace(BASE, **fields)


def standby(shape: str) -> Standby:
    return Standby(shape, f"c-{shape}", WorkDir(Path(f"/runs/pool-{shape}")))


def test_a_shape_is_all_of_the_container_but_the_run() -> None:
    base = shape_of(spec(), IMAGE, SOCKET)
    other_run = spec(run=RunName("acme", "r2"), credential="other", deadline=60.0)
    assert shape_of(other_run, IMAGE, SOCKET) == base
    assert shape_of(spec(limits=Limits(memory_bytes=1 << 27)), IMAGE, SOCKET) != base
    assert shape_of(spec(environment={"X": "1"}), IMAGE, SOCKET) != base
    assert shape_of(spec(entrypoint="other.py:main"), IMAGE, SOCKET) != base
    assert shape_of(spec(), "sha256:" + "b" * 64, SOCKET) != base
    assert shape_of(spec(), IMAGE, Path("/elsewhere.sock")) != base


def test_one_standby_per_shape_the_least_recently_launched_making_room() -> None:
    pool = WarmPool(2)
    for shape in ("a", "b", "c"):
        assert pool.take(shape) is None  # launched cold
        assert pool.wants(shape)
        pool.filling(shape)
        assert not pool.wants(shape)  # one starting is enough
    assert pool.add(standby("a")) == []
    assert pool.add(standby("b")) == []
    assert pool.add(standby("c")) == [standby("a")]  # "a" was launched longest ago
    assert pool.take("c") == standby("c") and pool.take("c") is None
    assert pool.wants("c") and len(pool) == 1
    assert pool.drain() == [standby("b")] and len(pool) == 0


def test_an_unused_shape_expires_and_a_failed_start_may_be_retried() -> None:
    pool = WarmPool(1, idle_seconds=0.0)
    pool.take("a")
    pool.filling("a")
    pool.failed("a")
    assert pool.wants("a")
    pool.filling("a")
    pool.add(standby("a"))
    assert pool.expired() == [standby("a")]
    assert not WarmPool(0).wants("a")  # no pool: never a standby
