"""What a tool sees: declared outputs only (no path tricks), inputs read-only, metrics with
steps, progress, cancellation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flnet.runtime import Cancelled, Outputs
from flnet.runtime.testing import make_context


def _config(**values: object) -> dict[str, object]:
    return dict(values)


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "/etc/passwd", "..", ".", "", "a\\b", "x\0y", ".hidden", "c:x"],
)
def test_output_names_cannot_escape_the_output_dir(tmp_path: Path, name: str) -> None:
    outputs = Outputs(tmp_path, ["model"])
    with pytest.raises(ValueError):
        outputs.path(name)
    with pytest.raises(ValueError):
        outputs.open(name)


def test_only_declared_outputs_are_accepted(tmp_path: Path) -> None:
    outputs = Outputs(tmp_path, ["model", "report"])
    assert outputs.path("model") == tmp_path / "model"
    with pytest.raises(ValueError, match="not a declared output"):
        outputs.path("weights")


def test_declared_names_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outputs(tmp_path, ["../evil"])


def test_open_text_and_binary(tmp_path: Path) -> None:
    outputs = Outputs(tmp_path / "out", ["report", "blob"])
    with outputs.open("report") as f:
        f.write("héllo")
    with outputs.open("blob", "wb") as b:
        b.write(b"\x00\x01")
    assert (tmp_path / "out" / "report").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "out" / "blob").read_bytes() == b"\x00\x01"
    assert outputs.existing() == {
        "blob": tmp_path / "out" / "blob",
        "report": tmp_path / "out" / "report",
    }
    with pytest.raises(ValueError, match="mode"):
        outputs.open("report", "r")  # type: ignore[call-overload]


def test_inputs_are_read_only(tmp_path: Path) -> None:
    ctx, _ = make_context(_config(), output_dir=tmp_path, inputs={"data": tmp_path / "data"})
    assert ctx.inputs["data"] == tmp_path / "data"
    with pytest.raises(TypeError):
        ctx.inputs["other"] = tmp_path  # type: ignore[index]


def test_raw_config_is_a_copy(tmp_path: Path) -> None:
    ctx, _ = make_context(_config(a=[1]), output_dir=tmp_path, raw_config={"a": [1]})
    ctx.raw_config["a"].append(2)
    assert ctx.raw_config == {"a": [1]}


def test_metric_steps_count_per_name(tmp_path: Path) -> None:
    ctx, recorder = make_context(_config(), output_dir=tmp_path)
    ctx.metric("loss", 1.0)
    ctx.metric("loss", 0.5)
    ctx.metric("acc", 0.9, unit="")
    ctx.metric("loss", 0.25, step=10)
    ctx.metric("loss", 0.2)
    assert recorder.metrics("loss") == [(0, 1.0), (1, 0.5), (10, 0.25), (11, 0.2)]
    assert recorder.metrics("acc") == [(0, 0.9)]


def test_metric_units_and_times(tmp_path: Path) -> None:
    ctx, recorder = make_context(_config(), output_dir=tmp_path)
    ctx.metric("duration", 1.5, unit="s")
    (entry,) = recorder.entries()
    assert entry.metric.unit == "s"
    assert entry.metric.time.seconds > 1_600_000_000


def test_progress_is_clamped(tmp_path: Path) -> None:
    ctx, recorder = make_context(_config(), output_dir=tmp_path)
    ctx.progress(-1)
    ctx.progress(0.5, "half")
    ctx.progress(3)
    assert recorder.progress() == [0.0, 0.5, 1.0]
    assert recorder.entries()[1].progress.message == "half"
    with pytest.raises(ValueError):
        ctx.progress(float("nan"))


def test_check_cancelled(tmp_path: Path) -> None:
    ctx, _ = make_context(_config(), output_dir=tmp_path)
    assert isinstance(ctx.cancelled, threading.Event)
    ctx.check_cancelled()
    ctx.cancelled.set()
    with pytest.raises(Cancelled):
        ctx.check_cancelled()
