"""The RO-Crate of a run, built from protos (control.export): every file listed with its
sha256, the run as a CreateAction with tool, inputs, outputs and agent, timeline, metrics and
logs; large files streamed through without being held whole."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf import timestamp_pb2

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control.export import export_run
from flnet.control.validation import canonical_sha256
from flnet.structs import dict_to_struct, struct_to_dict
from tests.export.crate import check_crate

RUN = "tenants/acme/runs/r1"
S = lc.RunState


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def artifact(name: str, data: bytes, **fields: object) -> ap.Artifact:
    return ap.Artifact(
        name=f"tenants/acme/artifacts/{name}",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        **fields,  # type: ignore[arg-type]
    )


async def events() -> AsyncIterator[rp.RunEvent]:
    changes = [(S.RUN_STATE_PENDING, S.RUN_STATE_INITIALIZED), (S.RUN_STATE_RUNNING,
               S.RUN_STATE_FINISHED)]  # fmt: skip
    seq = 0
    for n, (a, b) in enumerate(changes):
        seq += 1
        yield rp.RunEvent(
            run=RUN, sequence=seq,
            state_change=lc.StateChange(from_state=a, to_state=b, time=ts(100 + n), actor="engine"),
        )  # fmt: skip
    for step in range(3):
        seq += 1
        yield rp.RunEvent(
            run=RUN, sequence=seq,
            metric=tm.MetricPoint(name="loss", value=1 / (step + 1), step=step, time=ts(101)),
        )  # fmt: skip
        seq += 1
        yield rp.RunEvent(
            run=RUN, sequence=seq, log=tm.LogRecord(message=f"epoch {step}", time=ts(101))
        )


async def test_a_run_exports_as_a_valid_process_run_crate(tmp_path: Path) -> None:
    data = b"a,b\n1,2\n"
    model = b'{"w": [1, 2]}'
    config = {"epochs": 3, "rate": 0.5}
    source = artifact("in1", data, filename="train.csv", media_type="text/csv")
    output = artifact(
        "out1", model, filename="model.json", media_type="application/json", output_name="model"
    )
    run = rp.Run(
        name=RUN, tool_version="tenants/acme/tools/fit/versions/1.0.0",
        config=dict_to_struct(config), config_sha256=canonical_sha256(config),
        inputs=[rp.RunInput(name="data", artifact=source.name, sha256=source.sha256)],
        outputs=[output], state=S.RUN_STATE_FINISHED, creator="alice",
        start_time=ts(100), end_time=ts(103),
    )  # fmt: skip
    tool = tp.ToolVersion(
        name="tenants/acme/tools/fit/versions/1.0.0", version="1.0.0",
        image=tp.ContainerImage(digest="sha256:" + "ab" * 32, reference="flnet/fit:1.0.0"),
    )  # fmt: skip
    blobs = {source.name: data, output.name: model}

    async def read(a: ap.Artifact) -> AsyncIterator[bytes]:
        yield blobs[a.name]

    crate = tmp_path / "run.zip"
    with crate.open("wb") as f:
        async for chunk in export_run(run, tool, events(), [source], read, exported_by="audrey"):
            f.write(chunk)
    entities = check_crate(crate, tmp_path / "x")

    action = entities[f"#{RUN}"]
    assert action["@type"] == "CreateAction"
    assert action["actionStatus"] == "http://schema.org/CompletedActionStatus"
    assert action["agent"] == {"@id": "#agent/alice"}
    assert action["object"] == [{"@id": "config.json"}, {"@id": "inputs/data/train.csv"}]
    assert action["result"] == [{"@id": "outputs/model/model.json"}]
    tool_entity = entities[action["instrument"]["@id"]]
    assert (tool_entity["softwareVersion"], tool_entity["identifier"]) == (
        "1.0.0",
        tool.image.digest,
    )
    x = tmp_path / "x"
    assert (x / "inputs/data/train.csv").read_bytes() == data
    assert (x / "outputs/model/model.json").read_bytes() == model
    # config.json is the canonical form: its sha256 is the recorded config_sha256.
    assert entities["config.json"]["sha256"] == run.config_sha256
    assert json.loads((x / "config.json").read_text()) == struct_to_dict(run.config)
    timeline = json.loads((x / "timeline.json").read_text())
    assert [(t["from"], t["to"]) for t in timeline] == [
        (lifecycle.state_name(S.RUN_STATE_PENDING), lifecycle.state_name(S.RUN_STATE_INITIALIZED)),
        (lifecycle.state_name(S.RUN_STATE_RUNNING), lifecycle.state_name(S.RUN_STATE_FINISHED)),
    ]
    metrics = (x / "metrics.csv").read_text().splitlines()
    assert metrics[0] == "time,name,step,value,unit" and len(metrics) == 4
    logs = [json.loads(line) for line in (x / "logs.jsonl").read_text().splitlines()]
    assert [entry["message"] for entry in logs] == ["epoch 0", "epoch 1", "epoch 2"]


async def test_a_large_output_streams_through_in_chunks(tmp_path: Path) -> None:
    size, piece = 64 * 1024 * 1024, 1024 * 1024
    digest = hashlib.sha256()
    for i in range(size // piece):
        digest.update(bytes([i % 251]) * piece)
    big = ap.Artifact(
        name="tenants/acme/artifacts/big", sha256=digest.hexdigest(), size_bytes=size,
        output_name="weights", filename="weights.bin",
    )  # fmt: skip
    run = rp.Run(name=RUN, state=S.RUN_STATE_FINISHED, outputs=[big])

    async def read(a: ap.Artifact) -> AsyncIterator[bytes]:
        for i in range(size // piece):
            yield bytes([i % 251]) * piece

    async def no_events() -> AsyncIterator[rp.RunEvent]:
        return
        yield

    largest = 0
    out = io.BytesIO()
    tool = tp.ToolVersion(name="tenants/acme/tools/big/versions/1.0.0", version="1.0.0")
    async for chunk in export_run(run, tool, no_events(), [], read, exported_by="x"):
        largest = max(largest, len(chunk))
        out.write(chunk)
    assert largest <= 2 * piece  # streamed: never the whole file at once
    crate = tmp_path / "big.zip"
    crate.write_bytes(out.getvalue())
    entities = check_crate(crate, tmp_path / "x")
    assert entities["outputs/weights/weights.bin"]["contentSize"] == str(size)
