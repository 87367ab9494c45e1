"""Media types are `type/subtype[; name=value]` and nothing else (flnet.control.media_types):
one carrying CR/LF or another control character would end up in a Content-Type header. The
API refuses it with INVALID_ARGUMENT naming the field: uploads, and tool versions' inputs and
outputs. So are names, entrypoints and digests with a trailing newline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.control.media_types import media_type_problem
from flnet.toolspec import load_tool_spec
from tests.conftest import FIXTURES, TENANT, Clients, upload_messages
from tests.status import violations

NOOP = FIXTURES / "tools" / "noop"
INJECTED = "text/csv\r\nX-Injected: 1"


@pytest.mark.parametrize(
    "media_type",
    [
        "",  # the default applies
        "text/csv",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/ld+json",
        "image/svg+xml",
        "text/csv; charset=utf-8",
        "text/csv;charset=UTF-8;header=present",
        'text/plain; format="flowed text"',
        'application/x-thing; note="a \\"quoted\\" word"',
    ],
)
def test_media_types_are_accepted(media_type: str) -> None:
    assert media_type_problem(media_type) is None


@pytest.mark.parametrize(
    "media_type",
    [
        INJECTED,
        "text/csv\n",
        "text/csv\r",
        "text/\x00csv",
        "text/csv\t",
        "text/csv; charset=utf-8\x7f",
        'text/plain; format="a\nb"',
        "text/csv; charset",  # a parameter without value
        "text/csv;",
        "text",
        "text/",
        "/csv",
        "text/csv/extra",
        "te xt/csv",
        ".text/csv",  # a name starts with a letter or digit
        "tëxt/csv",
        "text/" + "x" * 251,  # too long for the column
    ],
)
def test_others_are_refused(media_type: str) -> None:
    assert media_type_problem(media_type)


async def test_an_upload_with_such_a_media_type_is_refused(api: Clients) -> None:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(
            metadata=asv.UploadMetadata(parent=TENANT, media_type=INJECTED)
        )
        yield asv.UploadInputRequest(chunk=b"a,b\n1,2\n")

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.UploadInput(messages())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["metadata.media_type"]
    assert (e.value.details() or "").startswith("metadata.media_type: not a media type")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, total_size=8, media_type=INJECTED)
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["media_type"]
    listed = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))
    assert not listed.artifacts


@pytest.mark.parametrize(
    "filename", ["data.csv\r\nX-Injected: 1", "tab\there.csv", "../../etc/passwd", "a\\b.csv"]
)
async def test_an_upload_whose_filename_is_no_file_name_is_refused(
    api: Clients, filename: str
) -> None:
    """CR/LF would split a header that carries the name; a path is not a file's name."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.UploadInput(
            upload_messages(TENANT, b"a,b\n1,2\n", filename, "text/csv")
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["metadata.filename"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, total_size=8, filename=filename)
        )
    assert violations(e.value) == ["filename"]
    listed = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))
    assert not listed.artifacts
    # A name with spaces and other scripts is a file name.
    await api.upload(b"a,b\n1,2\n", "données 2026.csv")


async def test_a_tool_version_with_such_media_types_is_refused(api: Clients) -> None:
    spec = load_tool_spec(NOOP)
    spec.version.inputs[0].media_type = INJECTED
    spec.version.outputs[1].media_type = "text/plain\nContent-Length: 0"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/noop", tool_version=await api.with_source(spec)
            )
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == [
        "tool_version.inputs[0].media_type",
        "tool_version.outputs[1].media_type",
    ]


async def test_names_entrypoints_and_digests_ending_in_a_newline_are_refused(
    api: Clients,
) -> None:
    """The same kind of value, with a newline after a valid one (a "$" in a pattern would
    accept it)."""
    spec = load_tool_spec(NOOP)
    spec.version.outputs[0].name = "result\n"
    spec.version.source.entrypoint = "tool.py:main\n"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/noop", tool_version=await api.with_source(spec)
            )
        )
    assert violations(e.value) == [
        "tool_version.outputs[0].name",
        "tool_version.source.entrypoint",
    ]
    spec = load_tool_spec(NOOP)
    spec.version.image.digest = "sha256:" + "a" * 64 + "\n"
    spec.version.image.entrypoint = "tool.py:main"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/noop", tool_version=spec.version)
        )
    assert violations(e.value) == ["tool_version.image.digest"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, total_size=1, sha256="a" * 64 + "\n")
        )
    assert violations(e.value) == ["sha256"]
