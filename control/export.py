"""Provenance export: one run as an RO-Crate 1.1 (a zip), following the Process Run Crate
profile (https://w3id.org/ro/wfrun/process/0.5): the run is a CreateAction whose instrument is
the tool (its version and image or source digest), whose object is its configuration and
inputs and whose result is its outputs; its agent is who ran it.

    ro-crate-metadata.json   the JSON-LD graph (written last: it lists every file's sha256)
    config.json              the configuration, canonical: its sha256 is the run's config_sha256
    tool.json                the tool version (contract, schema, digest), as the API shows it
    run.json                 the run, as the API shows it (states, times, error, cancellation)
    inputs/<name>/<file>     every input, byte for byte
    outputs/<name>/<file>    every output, byte for byte
    timeline.json            state changes: time, from, to, actor, message, error
    metrics.csv              every metric point: time, name, step, value, unit
    logs.jsonl               every log record, one JSON object per line

The zip is produced as a stream of chunks: files are read and written chunk by chunk, so no
whole file is ever in memory, whatever its size. Files are stored, not compressed (their
bytes are often compressed already, and export should cost I/O, not CPU); the JSON and text
files are deflated."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from flnet import lifecycle
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.channels import CHUNK_BYTES
from flnet.control.storage_uris import hide_storage_uris
from flnet.control.validation import canonical_json
from flnet.structs import struct_to_dict

RO_CRATE = "https://w3id.org/ro/crate/1.1"
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
# `sha256` is not in RO-Crate 1.1's context: the Workflow Run Crate terms define it.
CONTEXT: list[Any] = [
    f"{RO_CRATE}/context",
    {"sha256": "https://w3id.org/ro/terms/workflow-run#sha256"},
]
METADATA = "ro-crate-metadata.json"
# Metrics are spooled in memory up to this size, then on disk.
SPOOL_BYTES = 8 * 1024 * 1024

ReadArtifact = Callable[[ap.Artifact], AsyncIterator[bytes]]


@dataclass
class _Written:
    """A file of the crate, as written: its path, and what the metadata says of it."""

    path: str
    media_type: str
    size: int = 0
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def entity(self) -> dict[str, Any]:
        return {
            "@id": self.path,
            "@type": "File",
            "name": self.path.rsplit("/", 1)[-1],
            "encodingFormat": self.media_type,
            "contentSize": str(self.size),
            "sha256": self.sha256,
            **self.extra,
        }


class _Sink(io.RawIOBase):
    """Where zipfile writes: bytes collect here until the generator hands them on. Not
    seekable, so zipfile streams (sizes and CRCs in data descriptors)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self._chunks = b"".join(self._chunks), []
        return out


class _Crate:
    """The zip being written and the files written so far."""

    def __init__(self) -> None:
        self.sink = _Sink()
        self.zip = zipfile.ZipFile(self.sink, "w", allowZip64=True)
        self.files: list[_Written] = []
        self.entry: Any = None  # the entry open for writing, if any

    def abandon(self) -> None:
        """Closes whatever is still open (a complete crate is closed already)."""
        with contextlib.suppress(Exception):
            if self.entry is not None:
                self.entry.close()
            self.zip.close()

    def add_bytes(self, path: str, data: bytes, media_type: str, **extra: Any) -> _Written:
        self.zip.writestr(path, data, compress_type=zipfile.ZIP_DEFLATED)
        written = _Written(path, media_type, len(data), hashlib.sha256(data).hexdigest(), extra)
        self.files.append(written)
        return written

    def open(self, path: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(path, date_time=datetime.now(UTC).timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        return info


async def export_run(
    run: rp.Run,
    tool: tp.ToolVersion,
    events: AsyncIterator[rp.RunEvent],
    inputs: list[ap.Artifact],
    read: ReadArtifact,
    *,
    exported_by: str,
) -> AsyncIterator[bytes]:
    """The crate of `run`, as zip bytes in chunks. `events`: every stored event in order;
    `inputs`: the input artifacts (the outputs are the run's own); `read`: an artifact's
    bytes, whole, verified against its sha256 by whoever reads (DataLoss on a mismatch)."""
    crate = _Crate()
    try:
        async for chunk in _write(crate, run, tool, events, inputs, read, exported_by):
            yield chunk
    finally:
        crate.abandon()  # after a failure: nothing half-written left open


async def _write(
    crate: _Crate,
    run: rp.Run,
    tool: tp.ToolVersion,
    events: AsyncIterator[rp.RunEvent],
    inputs: list[ap.Artifact],
    read: ReadArtifact,
    exported_by: str,
) -> AsyncIterator[bytes]:
    config = crate.add_bytes(
        "config.json",
        canonical_json(struct_to_dict(run.config)).encode(),
        "application/json",
        description="The run's configuration in canonical form; its sha256 is config_sha256.",
    )
    crate.add_bytes("tool.json", _json(tool), "application/json")
    shown = rp.Run()
    shown.CopyFrom(run)
    hide_storage_uris(shown)  # as the API shows it: where the bytes are stays with us
    crate.add_bytes("run.json", _json(shown), "application/json")
    yield crate.sink.drain()

    # One pass over the events: logs go straight into the zip, metrics (a zip takes one
    # entry at a time) to a spool that stays in memory while small, then follows.
    timeline: list[dict[str, Any]] = []
    logs = _Stream(crate, "logs.jsonl", "application/x-ndjson", compress=True)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as metrics:
        metrics.write(b"time,name,step,value,unit\n")
        async for event in events:
            which = event.WhichOneof("event")
            if which == "log":
                log = json_format.MessageToDict(event.log)
                line = json.dumps({"sequence": event.sequence, **log}) + "\n"
                yield logs.write(line.encode())
            elif which == "metric":
                m = event.metric
                metrics.write(_csv_row(_time(m.time), m.name, m.step, repr(m.value), m.unit))
            elif which == "state_change":
                timeline.append(_timeline_entry(event))
        yield logs.close()
        metrics.seek(0)
        spooled = _Stream(crate, "metrics.csv", "text/csv", compress=True)
        while data := metrics.read(CHUNK_BYTES):
            yield spooled.write(data)
        yield spooled.close()
    crate.add_bytes("timeline.json", json.dumps(timeline, indent=2).encode(), "application/json")
    yield crate.sink.drain()

    objects: list[_Written] = [config]
    for artifact in inputs:
        name = next((i.name for i in run.inputs if i.artifact == artifact.name), "input")
        path = f"inputs/{name}/{_filename(artifact, name)}"
        async for chunk in _copy(crate, path, artifact, read, objects):
            yield chunk
    results: list[_Written] = []
    for artifact in run.outputs:
        path = f"outputs/{artifact.output_name}/{_filename(artifact, artifact.output_name)}"
        async for chunk in _copy(crate, path, artifact, read, results):
            yield chunk

    graph = _graph(run, tool, crate.files, objects, results, exported_by)
    document = {"@context": CONTEXT, "@graph": graph}
    crate.zip.writestr(METADATA, json.dumps(document, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    crate.zip.close()
    yield crate.sink.drain()


def _timeline_entry(event: rp.RunEvent) -> dict[str, Any]:
    change = event.state_change
    entry: dict[str, Any] = {
        "sequence": event.sequence,
        "time": _time(change.time),
        "from": lifecycle.state_name(change.from_state),
        "to": lifecycle.state_name(change.to_state),
        "actor": change.actor,
        "message": change.message,
    }
    if change.HasField("error"):
        entry["error"] = json_format.MessageToDict(change.error)
    return entry


def _csv_row(*values: Any) -> bytes:
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(values)
    return line.getvalue().encode()


class _Stream:
    """A crate file written piece by piece (hashing and counting on the way). One at a time:
    a zip is written entry after entry."""

    def __init__(self, crate: _Crate, path: str, media_type: str, *, compress: bool) -> None:
        self.crate = crate
        self.written = _Written(path, media_type)
        self.hash = hashlib.sha256()
        self.entry = crate.zip.open(crate.open(path, compress), "w", force_zip64=True)
        crate.entry = self.entry

    def write(self, data: bytes) -> bytes:
        self.hash.update(data)
        self.written.size += len(data)
        self.entry.write(data)
        return self.crate.sink.drain()

    def close(self) -> bytes:
        self.entry.close()
        self.crate.entry = None
        self.written.sha256 = self.hash.hexdigest()
        self.crate.files.append(self.written)
        return self.crate.sink.drain()


async def _copy(
    crate: _Crate, path: str, artifact: ap.Artifact, read: ReadArtifact, into: list[_Written]
) -> AsyncIterator[bytes]:
    stream = _Stream(crate, path, artifact.media_type or "application/octet-stream", compress=False)
    stream.written.extra["identifier"] = artifact.name
    async for data in read(artifact):
        yield stream.write(data)
    yield stream.close()
    into.append(stream.written)


def _graph(
    run: rp.Run,
    tool: tp.ToolVersion,
    files: list[_Written],
    objects: list[_Written],
    results: list[_Written],
    exported_by: str,
) -> list[dict[str, Any]]:
    run_id = f"#{run.name}"
    tool_id = f"#{tool.name}"
    agent_id = f"#agent/{run.creator or 'unknown'}"
    digest = tool.image.digest if tool.HasField("image") else tool.source.sha256
    action: dict[str, Any] = {
        "@id": run_id,
        "@type": "CreateAction",
        "name": f"Run {run.name} of {tool.name}",
        "identifier": run.name,
        "instrument": {"@id": tool_id},
        "agent": {"@id": agent_id},
        "object": [{"@id": f.path} for f in objects],
        "result": [{"@id": f.path} for f in results],
        "actionStatus": _status(run.state),
        "startTime": _time(run.start_time) if run.HasField("start_time") else None,
        "endTime": _time(run.end_time) if run.HasField("end_time") else None,
        "description": f"state {lifecycle.state_name(run.state)}; config_sha256 "
        f"{run.config_sha256}",
    }
    if run.HasField("error"):
        action["error"] = f"{lifecycle.reason_name(run.error.reason)}: {run.error.message}"
    if run.reproduce_of:
        action["isBasedOn"] = {"@id": f"#{run.reproduce_of}"}
    return [
        {
            "@id": METADATA,
            "@type": "CreativeWork",
            "conformsTo": {"@id": RO_CRATE},
            "about": {"@id": "./"},
        },
        {
            "@id": "./",
            "@type": "Dataset",
            "name": f"Provenance of {run.name}",
            "description": f"FLNet run {run.name}: {tool.name}, exported by {exported_by}.",
            "datePublished": datetime.now(UTC).isoformat(timespec="seconds"),
            "conformsTo": {"@id": PROCESS_RUN_CRATE},
            "license": "https://spdx.org/licenses/CC-BY-4.0",
            "hasPart": [{"@id": f.path} for f in files],
            "mentions": {"@id": run_id},
        },
        {
            "@id": PROCESS_RUN_CRATE,
            "@type": "CreativeWork",
            "name": "Process Run Crate",
            "version": "0.5",
        },
        _present(
            {
                "@id": tool_id,
                "@type": "SoftwareApplication",
                "name": tool.name.rsplit("/versions/", 1)[0].rsplit("/", 1)[-1],
                "softwareVersion": tool.version,
                "identifier": digest,
                "description": tool.description,
            }
        ),
        {"@id": agent_id, "@type": "Person", "name": run.creator or "unknown"},
        _present(action),
        *(f.entity() for f in files),
    ]


def _present(entity: dict[str, Any]) -> dict[str, Any]:
    """The entity without properties that say nothing (None or empty)."""
    return {k: v for k, v in entity.items() if v not in (None, "")}


def _json(message: Any) -> bytes:
    return json_format.MessageToJson(message, indent=2).encode()


def _time(ts: timestamp_pb2.Timestamp) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat())


def _status(state: int) -> str:
    if state == lifecycle.S.RUN_STATE_FINISHED:
        return "http://schema.org/CompletedActionStatus"
    if lifecycle.is_terminal(state):
        return "http://schema.org/FailedActionStatus"
    return "http://schema.org/ActiveActionStatus"


def _filename(artifact: ap.Artifact, fallback: str) -> str:
    """A file name safe inside the zip: no directories, no dot names."""
    return artifact.filename.replace("/", "_").replace("\\", "_").strip(". ") or fallback
