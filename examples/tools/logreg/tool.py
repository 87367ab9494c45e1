"""logreg: binary logistic regression trained by batch gradient descent, in pure Python.

Features are every column except the label, standardized (mean 0, standard deviation 1) with
statistics kept in the model. Weights start small and random from `seed`; each epoch is one
full-batch gradient step on the mean log-loss plus an L2 penalty (l2 / 2 * |w|^2, bias not
penalized). The run reports the metrics `loss` and `accuracy` of every epoch (step = epoch,
from 1), progress per epoch, and stops at the next epoch once cancelled. Outputs: `model`
(JSON weights) and `report` (a self-contained HTML page with the loss curve as inline SVG).
Given the same data and config the results are identical.
"""

from __future__ import annotations

import csv
import html
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flnet.runtime import Context


@dataclass
class Config:
    label_column: str = "label"
    epochs: int = 200
    learning_rate: float = 0.5
    l2: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.l2 < 0:
            raise ValueError("l2 must not be negative")


@dataclass
class Dataset:
    features: list[str]
    rows: list[list[float]]
    labels: list[int]
    # classes[0] is label 0, classes[1] label 1.
    classes: list[str]


@dataclass
class Model:
    features: list[str]
    classes: list[str]
    weights: list[float]
    bias: float
    mean: list[float]
    std: list[float]
    metrics: dict[str, float] = field(default_factory=dict)

    def probability(self, row: Sequence[float]) -> float:
        """P(class 1) for one raw (unstandardized) row."""
        z = self.bias + math.fsum(
            w * (x - m) / s
            for w, x, m, s in zip(self.weights, row, self.mean, self.std, strict=True)
        )
        return sigmoid(z)

    def predict(self, row: Sequence[float]) -> str:
        return self.classes[1] if self.probability(row) >= 0.5 else self.classes[0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Epoch:
    epoch: int
    loss: float
    accuracy: float


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def log_loss(z: float, y: int) -> float:
    """-log P(y | z) for the logit z, computed without overflow."""
    softplus = max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return softplus - y * z


def load_dataset(path: Path, label_column: str) -> Dataset:
    """Numeric feature columns and a two-class label column from a CSV with a header."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError("the CSV is empty: it has no header row") from None
        if label_column not in header:
            raise ValueError(f"label column {label_column!r} is not in the header {header}")
        label_index = header.index(label_column)
        feature_index = [i for i in range(len(header)) if i != label_index]
        if not feature_index:
            raise ValueError("the CSV has no feature columns")
        rows: list[list[float]] = []
        raw_labels: list[str] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"line {line}: {len(row)} fields, expected {len(header)}")
            try:
                rows.append([float(row[i]) for i in feature_index])
            except ValueError as exc:
                raise ValueError(f"line {line}: a feature is not a number ({exc})") from None
            raw_labels.append(row[label_index].strip())
    classes = sorted(set(raw_labels))
    if len(classes) != 2:
        raise ValueError(f"the label column must hold exactly two classes, found {classes}")
    return Dataset(
        features=[header[i] for i in feature_index],
        rows=rows,
        labels=[classes.index(label) for label in raw_labels],
        classes=classes,
    )


def standardization(rows: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Per-column mean and standard deviation (1.0 for constant columns)."""
    n = len(rows)
    columns = list(zip(*rows, strict=True))
    mean = [math.fsum(c) / n for c in columns]
    std = []
    for c, m in zip(columns, mean, strict=True):
        s = math.sqrt(math.fsum((x - m) ** 2 for x in c) / n)
        std.append(s if s > 0 else 1.0)
    return mean, std


def train(
    data: Dataset,
    config: Config,
    on_epoch: Callable[[Epoch], None] | None = None,
) -> tuple[Model, list[Epoch]]:
    """Fits the model; `on_epoch` sees each epoch's loss and accuracy (of the weights the
    epoch started with) and may raise to stop."""
    if not data.rows:
        raise ValueError("the dataset has no rows")
    mean, std = standardization(data.rows)
    x = [[(v - m) / s for v, m, s in zip(row, mean, std, strict=True)] for row in data.rows]
    y = data.labels
    n, d = len(x), len(data.features)
    rng = random.Random(config.seed)
    w = [rng.uniform(-0.01, 0.01) for _ in range(d)]
    b = 0.0
    history: list[Epoch] = []
    for epoch in range(1, config.epochs + 1):
        grad = [0.0] * d
        grad_b = 0.0
        loss = 0.0
        correct = 0
        for xi, yi in zip(x, y, strict=True):
            z = b + math.fsum(wj * xj for wj, xj in zip(w, xi, strict=True))
            loss += log_loss(z, yi)
            error = sigmoid(z) - yi
            correct += int((z >= 0) == (yi == 1))
            for j in range(d):
                grad[j] += error * xi[j]
            grad_b += error
        loss = loss / n + 0.5 * config.l2 * math.fsum(wj * wj for wj in w)
        record = Epoch(epoch, loss, correct / n)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        w = [
            wj - config.learning_rate * (gj / n + config.l2 * wj)
            for wj, gj in zip(w, grad, strict=True)
        ]
        b -= config.learning_rate * grad_b / n
    model = Model(
        features=data.features, classes=data.classes, weights=w, bias=b, mean=mean, std=std
    )
    model.metrics = evaluate(model, data)
    return model, history


def evaluate(model: Model, data: Dataset) -> dict[str, float]:
    """Mean log-loss and accuracy of the model on the data."""
    loss = 0.0
    correct = 0
    for row, label in zip(data.rows, data.labels, strict=True):
        p = min(max(model.probability(row), 1e-15), 1 - 1e-15)
        loss -= math.log(p) if label == 1 else math.log(1 - p)
        correct += int((p >= 0.5) == (label == 1))
    return {"loss": loss / len(data.rows), "accuracy": correct / len(data.rows)}


def loss_curve_svg(history: Sequence[Epoch], width: int = 640, height: int = 320) -> str:
    """The loss per epoch as an inline SVG line chart."""
    pad = 48
    losses = [h.loss for h in history]
    low, high = min(losses), max(losses)
    span = high - low or 1.0
    last = max(len(history) - 1, 1)
    points = " ".join(
        f"{pad + (width - 2 * pad) * i / last:.1f},"
        f"{height - pad - (height - 2 * pad) * (h.loss - low) / span:.1f}"
        for i, h in enumerate(history)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss per epoch">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#444"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>'
        f'<text x="{pad}" y="{pad - 12}" font-size="12">loss {high:.4f}</text>'
        f'<text x="{pad}" y="{height - pad + 16}" font-size="12">min {low:.4f}</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" font-size="12" '
        f'text-anchor="end">epoch {history[-1].epoch}</text>'
        "</svg>"
    )


def render_report(model: Model, history: Sequence[Epoch], config: Config) -> str:
    """A self-contained HTML report: loss curve, final metrics, weights, configuration."""
    e = html.escape
    metrics = "".join(f"<tr><th>{e(k)}</th><td>{v:.4f}</td></tr>" for k, v in model.metrics.items())
    weights = "".join(
        f"<tr><th>{e(name)}</th><td>{w:+.4f}</td></tr>"
        for name, w in zip(model.features, model.weights, strict=True)
    )
    settings = "".join(
        f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in asdict(config).items()
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"><title>logreg report</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}</style>"
        "</head><body>"
        "<h1>Logistic regression</h1>"
        f"<p>Classes: {e(model.classes[0])} (0) and {e(model.classes[1])} (1); "
        f"{len(history)} epochs.</p>"
        f"<h2>Training loss</h2>{loss_curve_svg(history)}"
        f"<h2>Final metrics</h2><table>{metrics}</table>"
        f"<h2>Weights</h2><table>{weights}<tr><th>bias</th><td>{model.bias:+.4f}</td></tr></table>"
        f"<h2>Configuration</h2><table>{settings}</table>"
        "</body></html>\n"
    )


def main(ctx: Context[Config]) -> None:
    config = ctx.config
    data = load_dataset(ctx.inputs["data"], config.label_column)
    ctx.log.info(
        "training on %d rows, %d features (%s), classes %s",
        len(data.rows),
        len(data.features),
        ", ".join(data.features),
        data.classes,
    )

    def on_epoch(record: Epoch) -> None:
        ctx.check_cancelled()
        ctx.metric("loss", record.loss, step=record.epoch)
        ctx.metric("accuracy", record.accuracy, step=record.epoch)
        ctx.progress(record.epoch / config.epochs, f"epoch {record.epoch}/{config.epochs}")

    model, history = train(data, config, on_epoch)
    ctx.log.info("final loss %.4f, accuracy %.4f", model.metrics["loss"], model.metrics["accuracy"])
    with ctx.outputs.open("model") as f:
        json.dump(model.to_json(), f, indent=2)
    with ctx.outputs.open("report") as f:
        f.write(render_report(model, history, config))
