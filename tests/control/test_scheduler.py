"""The scheduler's decisions, pure: spread by room, labels, FIFO within a tenant, fair share
across tenants, quotas and capacities never exceeded, whatever the queues."""

from __future__ import annotations

import random

from flnet.control.fleet.scheduler import (
    NO_ORCHESTRATOR,
    WAITING_FOR_CAPACITY,
    Amounts,
    QueuedRun,
    Quota,
    Site,
    decide,
)


def runs(tenant: str, n: int, start: int = 0, **kw: object) -> list[QueuedRun]:
    return [QueuedRun(f"{tenant}{i}", tenant, start + i, **kw) for i in range(n)]  # type: ignore[arg-type]


def site(name: str, slots: int = 4, cpu: int = 4000, memory: int = 8 << 30, **labels: str) -> Site:
    return Site(name, cpu, memory, slots, labels)


def test_runs_spread_to_the_orchestrator_with_most_room() -> None:
    big, small = site("big", slots=8), site("small", slots=2)
    out = decide([big, small], {"a": runs("a", 6)}, {}, {})
    placed = [p.orchestrator for p in out.placements]
    assert placed.count("big") == 5 and placed.count("small") == 1
    assert big.load.runs == 5 and small.load.runs == 1


def test_cpu_and_memory_bound_placement_as_slots_do() -> None:
    only = site("only", slots=10, cpu=2000, memory=1 << 30)
    queue = {"a": runs("a", 5, cpu_millis=600, memory_bytes=100 << 20)}
    out = decide([only], queue, {}, {})
    assert len(out.placements) == 3  # 3 x 600 millicores fit in 2000
    assert out.reasons == {"a": WAITING_FOR_CAPACITY}


def test_a_tenants_head_waiting_for_room_blocks_its_later_runs() -> None:
    only = site("only", slots=2, cpu=1000)
    queue = {"a": [QueuedRun("big", "a", 0, cpu_millis=800), *runs("a", 3, 1, cpu_millis=100)]}
    out = decide(
        [only],
        queue,
        {},
        {},
    )
    assert [p.run.id for p in out.placements] == ["big", "a0"]
    out = decide([site("only", slots=4, cpu=1000)], {"a": queue["a"][1:]} | {"b": []}, {}, {})
    assert [p.run.id for p in out.placements] == ["a0", "a1", "a2"]
    only = site("only", slots=4, cpu=1000)
    only.load = Amounts(900, 0, 1)
    out = decide([only], queue, {}, {})
    assert out.placements == [] and out.reasons == {"a": WAITING_FOR_CAPACITY}  # a0 would fit


def test_a_run_no_orchestrator_has_the_labels_for_is_passed_over() -> None:
    gpu = site("gpu", gpu="", site="lab")
    plain = site("plain")
    queue = {
        "a": [
            QueuedRun("eu", "a", 0, required_labels=("site=eu",)),
            QueuedRun("g", "a", 1, required_labels=("gpu", "site=lab")),
            QueuedRun("any", "a", 2),
        ]
    }
    out = decide([gpu, plain], queue, {}, {})
    assert {p.run.id: p.orchestrator for p in out.placements} == {"g": "gpu", "any": "plain"}
    assert out.run_reasons == {"eu": "no attached orchestrator has the labels site=eu"}
    too_big = {"a": [QueuedRun("huge", "a", 0, memory_bytes=1 << 40)]}
    assert "large enough" in decide([plain], too_big, {}, {}).run_reasons["huge"]
    assert decide([], queue, {}, {}).reasons == {"a": NO_ORCHESTRATOR}


def test_one_tenants_thousand_runs_do_not_starve_another_tenants_one() -> None:
    queue = {"a": runs("a", 1000), "b": runs("b", 1, start=5000)}
    out = decide([site("only", slots=4)], queue, {}, {})
    assert [p.run.id for p in out.placements] == ["a0", "b0", "a1", "a2"]
    # B holds nothing yet, A holds 3: B's next run goes first.
    out = decide(
        [site("only", slots=1)],
        {"a": runs("a", 10), "b": runs("b", 2, 99)},
        {"a": Amounts(0, 0, 3)},
        {},
    )
    assert [p.run.id for p in out.placements] == ["b0"]


def test_quotas_hold_and_their_reason_says_which() -> None:
    queue = {"a": runs("a", 5, cpu_millis=500), "b": runs("b", 5)}
    quotas = {"a": Quota(max_runs=2), "b": Quota(max_cpu_millis=1)}
    out = decide([site("only", slots=20, cpu=20_000)], queue, {}, quotas)
    assert sorted(p.run.id for p in out.placements) == ["a0", "a1", "b0", "b1", "b2", "b3", "b4"]
    assert out.reasons == {"a": "tenant quota: 2/2 runs"}
    memory = {"a": Quota(max_memory_bytes=100)}
    out = decide([site("only")], {"a": runs("a", 1, memory_bytes=200)}, {}, memory)
    assert out.reasons["a"].startswith("tenant quota: 0/100 bytes of memory")
    out = decide([site("only")], queue, {}, {}, Quota(max_runs=1))
    assert len(out.placements) == 2  # the default quota, one run per tenant


def test_nothing_exceeds_a_capacity_or_a_quota_whatever_the_queues() -> None:
    rng = random.Random(20261204)
    for _ in range(200):
        sites = [
            site(
                f"s{i}",
                slots=rng.randint(1, 6),
                cpu=rng.randint(500, 8000),
                gpu="" if i % 2 else "x",
            )
            for i in range(rng.randint(1, 4))
        ]
        tenants = [f"t{i}" for i in range(rng.randint(1, 5))]
        queue = {
            t: [
                QueuedRun(
                    f"{t}-{j}",
                    t,
                    rng.randint(0, 1000),
                    cpu_millis=rng.choice([0, 100, 700, 3000]),
                    required_labels=rng.choice([(), ("gpu",), ("gpu=x",)]),
                )
                for j in range(rng.randint(0, 30))
            ]
            for t in tenants
        }
        quotas = {t: Quota(max_runs=rng.randint(0, 5)) for t in tenants if rng.random() < 0.5}
        out = decide(sites, queue, {}, quotas)
        for s in sites:
            assert s.load.runs <= s.run_slots and s.load.cpu_millis <= s.cpu_millis
        per_tenant: dict[str, int] = {}
        for p in out.placements:
            per_tenant[p.run.tenant] = per_tenant.get(p.run.tenant, 0) + 1
            placed_on = next(s for s in sites if s.name == p.orchestrator)
            assert placed_on.satisfies(p.run.required_labels)
        for t, count in per_tenant.items():
            limit = quotas.get(t, Quota()).max_runs
            assert not limit or count <= limit
        assert len({p.run.id for p in out.placements}) == len(out.placements)
