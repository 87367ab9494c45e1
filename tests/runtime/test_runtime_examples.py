"""The example tools' domain code on small data, called through a Context built for the test
(no control plane)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flnet.runtime import Cancelled, build_config
from flnet.runtime.loader import load_entrypoint, load_module
from flnet.runtime.testing import make_context

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tools"


@pytest.fixture(scope="module")
def csv_stats() -> ModuleType:
    return load_module(EXAMPLES / "csv_stats", "tool.py")


@pytest.fixture(scope="module")
def logreg() -> ModuleType:
    return load_module(EXAMPLES / "logreg", "tool.py")


SMALL_CSV = "x;y;name\n1;10;a\n2;;b\n3;30;a\n4;40;\n"


def test_csv_stats_numbers(csv_stats: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text(SMALL_CSV, encoding="utf-8")
    config = build_config(csv_stats.Config, {"delimiter": ";", "percentiles": [10, 25, 50, 75]})

    stats = csv_stats.compute_stats(data, config)

    assert stats["rows"] == 4
    x = stats["columns"]["x"]
    assert x["type"] == "numeric"
    assert (x["count"], x["missing"], x["min"], x["max"]) == (4, 0, 1.0, 4.0)
    assert x["mean"] == pytest.approx(2.5)
    assert x["std"] == pytest.approx(math.sqrt(5 / 3))  # sample standard deviation
    assert x["percentiles"] == pytest.approx({"p10": 1.3, "p25": 1.75, "p50": 2.5, "p75": 3.25})
    y = stats["columns"]["y"]
    assert (y["count"], y["missing"]) == (3, 1)
    assert y["mean"] == pytest.approx(80 / 3)
    assert y["std"] == pytest.approx(math.sqrt(700 / 3))
    assert y["percentiles"]["p50"] == pytest.approx(30.0)
    name = stats["columns"]["name"]
    assert name["type"] == "categorical"
    assert (name["count"], name["missing"], name["distinct"]) == (3, 1, 2)
    assert name["top"][0] == {"value": "a", "count": 2}


def test_csv_stats_selected_columns_and_unknown_ones(csv_stats: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text(SMALL_CSV, encoding="utf-8")
    config = build_config(csv_stats.Config, {"delimiter": ";", "columns": ["name"]})
    assert list(csv_stats.compute_stats(data, config)["columns"]) == ["name"]
    config = build_config(csv_stats.Config, {"delimiter": ";", "columns": ["z"]})
    with pytest.raises(ValueError, match="not in the CSV header: z"):
        csv_stats.compute_stats(data, config)


def test_csv_stats_rejects_bad_percentiles(csv_stats: ModuleType) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        build_config(csv_stats.Config, {"percentiles": [101]})


def test_csv_stats_main_on_the_sample(tmp_path: Path) -> None:
    main = load_entrypoint(EXAMPLES / "csv_stats", "tool.py:main")
    module = load_module(EXAMPLES / "csv_stats", "tool.py")
    ctx, recorder = make_context(
        build_config(module.Config, {}),
        inputs={"data": EXAMPLES / "csv_stats" / "sample.csv"},
        output_dir=tmp_path,
        outputs=["stats"],
    )
    main(ctx)
    stats = json.loads((tmp_path / "stats").read_text(encoding="utf-8"))
    assert stats["rows"] == 150
    assert set(stats["columns"]) == {
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "species",
    }
    assert stats["columns"]["species"]["distinct"] == 3
    assert stats["columns"]["petal_length"]["type"] == "numeric"
    assert recorder.progress()[0] == 0.0 and recorder.progress()[-1] == 1.0
    assert any("150 rows" in line for line in recorder.logs())


def _dataset(logreg: ModuleType, tmp_path: Path, text: str) -> Any:
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    return logreg.load_dataset(path, "label")


def test_logreg_learns_a_separable_problem(logreg: ModuleType, tmp_path: Path) -> None:
    rows = "".join(f"{x},{'yes' if x > 0 else 'no'}\n" for x in (-3, -2, -1.5, -1, 1, 1.5, 2, 3))
    data = _dataset(logreg, tmp_path, "x,label\n" + rows)
    assert data.classes == ["no", "yes"] and data.features == ["x"]
    model, history = logreg.train(data, logreg.Config(epochs=100, learning_rate=1.0))
    assert len(history) == 100 and history[0].epoch == 1
    assert history[-1].loss < history[0].loss
    assert model.metrics["accuracy"] == 1.0
    assert model.predict([2.5]) == "yes" and model.predict([-2.5]) == "no"
    assert model.weights[0] > 0


def test_logreg_loss_matches_the_definition(logreg: ModuleType) -> None:
    assert logreg.log_loss(0.0, 1) == pytest.approx(math.log(2))
    assert logreg.log_loss(1000.0, 1) == pytest.approx(0.0)
    assert logreg.log_loss(-1000.0, 1) == pytest.approx(1000.0)
    assert logreg.sigmoid(0.0) == 0.5
    assert logreg.sigmoid(-1000.0) == 0.0


def test_logreg_is_deterministic_given_the_seed(logreg: ModuleType) -> None:
    data = logreg.load_dataset(EXAMPLES / "logreg" / "sample.csv", "label")
    config = logreg.Config(epochs=30, seed=7)
    a, history_a = logreg.train(data, config)
    b, history_b = logreg.train(data, config)
    c, _ = logreg.train(data, logreg.Config(epochs=30, seed=8))
    assert a.to_json() == b.to_json() and history_a == history_b
    assert a.weights != c.weights


def test_logreg_l2_shrinks_the_weights(logreg: ModuleType) -> None:
    data = logreg.load_dataset(EXAMPLES / "logreg" / "sample.csv", "label")
    free, _ = logreg.train(data, logreg.Config(epochs=50))
    shrunk, _ = logreg.train(data, logreg.Config(epochs=50, l2=1.0))
    assert sum(w * w for w in shrunk.weights) < sum(w * w for w in free.weights)


def test_logreg_rejects_more_than_two_classes(logreg: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly two classes"):
        _dataset(logreg, tmp_path, "x,label\n1,a\n2,b\n3,c\n")
    with pytest.raises(ValueError, match="not a number"):
        _dataset(logreg, tmp_path, "x,label\nfoo,a\n2,b\n")


def test_logreg_main_reports_and_writes_outputs(logreg: ModuleType, tmp_path: Path) -> None:
    main = load_entrypoint(EXAMPLES / "logreg", "tool.py:main")
    config = build_config(logreg.Config, {"epochs": 40.0, "seed": 3.0})  # Struct numbers
    ctx, recorder = make_context(
        config,
        inputs={"data": EXAMPLES / "logreg" / "sample.csv"},
        output_dir=tmp_path,
        outputs=["model", "report"],
    )
    main(ctx)
    losses = recorder.metrics("loss")
    assert [step for step, _ in losses] == list(range(1, 41))
    assert losses[-1][1] < losses[0][1]
    assert [step for step, _ in recorder.metrics("accuracy")] == list(range(1, 41))
    assert recorder.progress()[-1] == 1.0
    model = json.loads((tmp_path / "model").read_text(encoding="utf-8"))
    assert model["features"] == ["x1", "x2"] and model["classes"] == ["0", "1"]
    assert model["metrics"]["accuracy"] > 0.9
    report = (tmp_path / "report").read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>")
    assert "<svg" in report and "<polyline" in report
    assert "accuracy" in report


def test_logreg_stops_when_cancelled(logreg: ModuleType, tmp_path: Path) -> None:
    main = load_entrypoint(EXAMPLES / "logreg", "tool.py:main")
    ctx, recorder = make_context(
        logreg.Config(epochs=1000),
        inputs={"data": EXAMPLES / "logreg" / "sample.csv"},
        output_dir=tmp_path,
        outputs=["model", "report"],
    )
    ctx.cancelled.set()
    with pytest.raises(Cancelled):
        main(ctx)
    assert recorder.metrics("loss") == []
    assert not (tmp_path / "model").exists()
