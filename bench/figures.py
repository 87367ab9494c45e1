"""What a bench measured, as figures: each with the baseline measured in the same run (if it
has one) and its target. Every bench prints its own report and publishes its figures;
`python -m bench` (`make bench`) collects them into one table and keeps them as JSON under
bench/results/, so that figures can be compared across commits."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

#: Where a bench run by `python -m bench` appends its figures (JSON lines).
FIGURES_ENV = "FLNET_BENCH_FIGURES"


@dataclass(frozen=True)
class Figure:
    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None = None  # the same quantity, measured in the same run
    target: str = ""  # "ratio >= 0.5", "<= 10": of `ratio` when there is a baseline
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None without a target)."""
        if not self.target:
            return None
        op, bound = self.target.split()[-2:]
        measured = self.ratio if self.target.startswith("ratio") else self.value
        assert measured is not None, f"{self.name}: a ratio target without a baseline"
        return measured >= float(bound) if op == ">=" else measured <= float(bound)

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        """A figure as `as_json` wrote it (what is derived is derived again)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def publish(*figures: Figure) -> None:
    """Hands `figures` to `python -m bench` when it runs this bench (else nothing)."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    with open(path, "a") as out:
        for figure in figures:
            out.write(json.dumps(asdict(figure)) + "\n")
