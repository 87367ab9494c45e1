"""Accepting runs: a submission is validated (tool version, configuration, inputs), recorded
with its request fingerprint, and queued to be placed on an orchestrator (control.fleet); a
retried submission returns the first run."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control import credentials, names
from flnet.control.clock import now_us, seconds
from flnet.control.reasons import Reason
from flnet.control.runs.context import RunContext
from flnet.control.store import RunRow
from flnet.control.validation import (
    canonical_sha256,
    dict_to_struct,
)
from flnet.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)
S = lc.RunState
R = lc.ErrorReason

DEFAULT_INPUT_LIMIT = 1024**3


class Admission:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.store = context.store

    async def create(
        self,
        tenant: str,
        run: rp.Run,
        request_id: str,
        creator: str,
        *,
        reproduce_of: str = "",
        dev_session_run: str = "",
    ) -> tuple[RunRow, str]:
        """Validates and records a run, queued to be placed. Returns the run and, for a
        development session (never placed: its developer runs the engine), the credential
        its developer's engine connects with."""
        tv = names.parse_tool_version(run.tool_version, "run.tool_version")
        if tv.tenant != tenant:
            raise NotFound(f"tool version {run.tool_version} does not exist")
        version = await self.context.tool_version(run.tool_version)
        if version.HasField("local_source"):  # stored before sources were uploaded
            raise FailedPrecondition(
                f"{version.name} names a directory on the platform host, which no longer "
                "runs: register the tool again (its files are uploaded now)",
                violations=[("run.tool_version", "registered from a host path")],
            )
        config = await self.context.validated_config(version, run.config, "run.config")
        inputs = await self._resolve_inputs(tenant, version, run.inputs)
        fingerprint = canonical_sha256(
            {
                "tool_version": run.tool_version,
                "config": config,
                "dev": run.dev_session,
                "inputs": [[i.name, i.artifact] for i in inputs],
                "reproduce_of": reproduce_of,
            }
        )
        if request_id:
            existing = await self.store.runs.find_run_by_request(tenant, request_id)
            if existing is not None:
                return await self._retried(existing, fingerprint, creator)
        spec = rp.Run(
            tool_version=run.tool_version,
            config=dict_to_struct(config),
            config_sha256=canonical_sha256(config),
            inputs=inputs,
            creator=creator,
            request_id=request_id,
            reproduce_of=reproduce_of,
            artifact_digest=version.image.digest
            if version.HasField("image")
            else "sha256:" + version.source.sha256,
            dev_session=run.dev_session,
            dev_session_run=dev_session_run,
        )
        run_id = uuid.uuid4().hex[:20]
        deadline_us = None
        lifetime = None
        if version.timeouts.HasField("deadline") and seconds(version.timeouts.deadline) > 0:
            lifetime = seconds(version.timeouts.deadline)
            deadline_us = now_us() + int(lifetime * 1e6)
        token = self.context.credentials.mint(names.run_name(tenant, run_id), lifetime)
        token_sha = credentials.digest(token)
        developed = bool(run.dev_session or dev_session_run)
        row, created = await self.store.runs.create_run(
            run_id=run_id,
            tenant=tenant,
            tool=tv.tool,
            spec=spec,
            request_sha256=fingerprint,
            credential_sha256=token_sha,
            deadline_us=deadline_us,
            queued=not developed,
            reserves=(version.resources.cpu_millis, version.resources.memory_bytes),
            required_labels=version.resources.required_labels,
        )
        if not created:
            return await self._retried(row, fingerprint, creator)
        if developed:
            return row, token
        self.context.placer.kick()
        return row, ""

    async def _retried(
        self, existing: RunRow, fingerprint: str, creator: str
    ) -> tuple[RunRow, str]:
        """A retried CreateRun returns the first run; a different request under the same
        request_id is a client bug. The first answer may have been lost: a development
        session's creator gets a fresh credential (nobody else: the request is visible to
        the whole tenant). A run recorded is queued in the same transaction: nothing is left
        to do for it."""
        if await self.store.runs.request_sha256_of(existing.id) != fingerprint:
            raise AlreadyExists(
                f"request_id was already used for {existing.name} with a different request",
                violations=[("request_id", "already used")],
            )
        if existing.state != S.RUN_STATE_PENDING or not existing.spec.dev_session:
            return existing, ""
        if existing.spec.creator != creator:
            return existing, ""
        left = max(1.0, (existing.deadline_us - now_us()) / 1e6) if existing.deadline_us else None
        return existing, self.context.credentials.mint(existing.name, left)

    async def _resolve_inputs(
        self, tenant: str, version: tp.ToolVersion, given: Sequence[rp.RunInput]
    ) -> list[rp.RunInput]:
        declared = {i.name: i for i in version.inputs}
        violations: list[tuple[str, str]] = []
        resolved: list[rp.RunInput] = []
        seen: set[str] = set()
        for i, inp in enumerate(given):
            field = f"run.inputs[{i}]"
            spec = declared.get(inp.name)
            if spec is None:
                violations.append(
                    (
                        f"{field}.name",
                        f"'{inp.name}' is not a declared input "
                        f"(declared: {', '.join(sorted(declared)) or 'none'})",
                    )
                )
                continue
            if inp.name in seen:
                violations.append((f"{field}.name", f"'{inp.name}' is given twice"))
                continue
            seen.add(inp.name)
            a_tenant, a_id = names.parse_artifact(inp.artifact, f"{field}.artifact")
            if a_tenant != tenant:
                raise NotFound(f"artifact {inp.artifact} does not exist")
            artifact = await self.store.artifacts.get_artifact(tenant, a_id)
            limit = spec.max_size_bytes or DEFAULT_INPUT_LIMIT
            if artifact.size_bytes > limit:
                violations.append(
                    (
                        f"{field}.artifact",
                        f"{artifact.size_bytes} bytes exceeds the input's limit of {limit}",
                    )
                )
                continue
            resolved.append(
                rp.RunInput(
                    name=inp.name,
                    artifact=artifact.name,
                    sha256=artifact.sha256,
                    size_bytes=artifact.size_bytes,
                )
            )
        for name, spec in declared.items():
            if spec.required and name not in seen:
                violations.append(("run.inputs", f"input '{name}' is required"))
        if violations:
            raise InvalidArgument(
                "inputs do not match the tool's declared inputs: "
                + "; ".join(f"{f}: {d}" for f, d in violations[:5]),
                reason=Reason.INPUT_INVALID,
                violations=violations,
            )
        return resolved

    async def reproduce(self, tenant: str, run_id: str, request_id: str, creator: str) -> RunRow:
        """A new run of the same tool version, configuration and inputs as `run_id`."""
        original = await self.store.runs.get_run(tenant, run_id)
        run = rp.Run(
            tool_version=original.spec.tool_version,
            config=original.spec.config,
            inputs=[rp.RunInput(name=i.name, artifact=i.artifact) for i in original.spec.inputs],
        )
        row, _ = await self.create(tenant, run, request_id, creator, reproduce_of=original.name)
        return row
