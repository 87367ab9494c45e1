"""Every RPC of the control plane, the one server (health and reflection too), as
server reflection lists them, fed malformed frames and random well-formed messages
(tests/fuzz/messages.py), without a token and with a valid token of the method's audience.

Whatever comes in: no answer is UNKNOWN or INTERNAL (an INTERNAL means an input reached the
code as an exception), a malformed first message is UNAUTHENTICATED without a token and
INVALID_ARGUMENT with one (public methods: always INVALID_ARGUMENT), the log holds no
error and no traceback and stays small, and the server is SERVING afterwards. Seeded:
a failure names its seed, method and case, and replays the same."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from dataclasses import dataclass

import grpc

from flnet.control.app import SERVICE_NAMES as CONTROL_SERVICES
from tests.fuzz.conftest import Lines
from tests.fuzz.messages import Messages
from tests.fuzz.targets import Method, Target
from tests.fuzz.values import MALFORMED_FRAMES

# FLNET_FUZZ_SEED explores other seeds; a failure names the one to replay.
SEED = int(os.environ.get("FLNET_FUZZ_SEED", "20240612"))
MESSAGES_PER_METHOD = 12  # per token: with and without
MUTANTS_PER_METHOD = 30  # of the method's valid request, with a token
CONCURRENCY = 16
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# What a fuzzing run may write to the log, all servers' lines together: bounded, whatever
# the number of calls (malformed requests are logged at most once per method per 10 s).
MAX_LOG_BYTES = 64 * 1024


@dataclass(frozen=True)
class Case:
    method: Method
    what: str
    frames: tuple[bytes, ...]
    token: str | None
    #: The one right answer, when the case has one (malformed first frames).
    expected: grpc.StatusCode | None = None

    def __str__(self) -> str:
        who = "with token" if self.token else "without token"
        return f"{self.method.path} {self.what} {who}"


def cases(target: Target, methods: list[Method], rng: random.Random) -> list[Case]:
    messages = Messages(rng, target.names)
    made: list[Case] = []
    for method in methods:
        tokens = [None] if method.audience is None else [None, target.tokens[method.audience]]
        for token in tokens:
            for name, frame in MALFORMED_FRAMES.items():
                if method.parses(frame):
                    continue
                refused = token is None and method.audience is not None
                expected = grpc.StatusCode.UNAUTHENTICATED if refused else (
                    grpc.StatusCode.INVALID_ARGUMENT
                )  # fmt: skip
                made.append(Case(method, f"malformed frame: {name}", (frame,), token, expected))
                if method.client_streaming:  # the same after a well-formed first message
                    template = target.templates.get(method.path)
                    if template and token:
                        first = template[0].SerializeToString()
                    else:
                        first = messages.of(method.descriptor.input_type).SerializeToString()
                    made.append(Case(method, f"then malformed: {name}", (first, frame), token))
            for i in range(MESSAGES_PER_METHOD):
                count = rng.randint(1, 3) if method.client_streaming else 1
                frames = tuple(
                    messages.of(method.descriptor.input_type).SerializeToString()
                    for _ in range(count)
                )
                made.append(Case(method, f"random message #{i}", frames, token))
            template = target.templates.get(method.path)
            if template and token:
                frames = tuple(m.SerializeToString() for m in template)
                made.append(Case(method, "valid request", frames, token))
            for i in range(MUTANTS_PER_METHOD if template and token else 0):
                assert template is not None
                changed = rng.randrange(len(template))
                frames = tuple(
                    (
                        messages.mutant(m, rng.randint(1, 3)) if j == changed else m
                    ).SerializeToString()
                    for j, m in enumerate(template)
                )
                made.append(Case(method, f"mutant #{i}", frames, token))
    return made


async def fuzz(target: Target, services: list[str], logs: Lines) -> None:
    methods = await target.methods()
    assert {m.path.rsplit("/", 1)[0].lstrip("/") for m in methods} >= set(services)
    paths = {m.path for m in methods}
    assert set(target.templates) <= paths
    assert {p for p in paths if p.split("/")[1] in services} <= set(target.templates)
    rng = random.Random(f"{SEED}:{target.name}")
    todo = cases(target, methods, rng)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(case: Case) -> grpc.StatusCode:
        async with gate:
            return await target.call(case.method, case.frames, case.token)

    codes = await asyncio.gather(*(run(case) for case in todo))
    outcomes = list(zip(todo, codes, strict=True))
    faults = [f"{case}: {code.name}" for case, code in outcomes if code in FORBIDDEN]
    assert not faults, f"seed {SEED}:\n" + "\n".join(faults)
    wrong = [
        f"{case}: {code.name}, expected {case.expected.name}"
        for case, code in outcomes
        if case.expected is not None and code != case.expected
    ]
    assert not wrong, "\n".join(wrong)
    assert await target.healthy(services) == dict.fromkeys(["", *services], "SERVING")
    assert logs.faults() == []
    assert logs.size < MAX_LOG_BYTES, "\n".join(logs.text[-20:])
    # Not a vacuous run: every kind of case, and answers other than refusals.
    answered = Counter(code for code in codes)
    assert len(todo) > 100 * len(services)
    assert answered[grpc.StatusCode.OK] and answered[grpc.StatusCode.INVALID_ARGUMENT]


async def test_the_control_plane_answers_whatever_it_is_sent(
    server_logs: Lines, control_target: Target
) -> None:
    await fuzz(control_target, list(CONTROL_SERVICES), server_logs)
