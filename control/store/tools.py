"""Tools and their immutable versions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control import names
from flnet.control.clock import now_us, timestamp
from flnet.control.schema import tool_versions, tools
from flnet.control.store.base import Database
from flnet.errors import AlreadyExists, FailedPrecondition, NotFound


class ToolStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._required_outputs: dict[str, frozenset[str]] = {}

    async def put_tool_version(
        self, tenant: str, tool: str, version: tp.ToolVersion, source_artifact_id: str | None = None
    ) -> tuple[tp.ToolVersion, bool]:
        """Stores a version (creating its tool); an identical contract returns the existing one.
        `source_artifact_id`: the input artifact holding its source archive."""
        existing = await self._find_tool_version(tenant, tool, version.version)
        if existing is not None:
            if existing.contract_sha256 == version.contract_sha256:
                return existing, False
            raise AlreadyExists(
                f"{existing.name} exists with a different contract; versions are immutable, "
                "register a new version",
                violations=[("tool_version.version", "already used")],
            )
        now = now_us()
        version.create_time.CopyFrom(timestamp(now))
        try:
            async with self.db.write() as conn:
                row = (
                    await conn.execute(
                        select(tools.c.name).where(tools.c.tenant == tenant, tools.c.name == tool)
                    )
                ).first()
                if row is None:
                    await conn.execute(
                        insert(tools).values(
                            tenant=tenant,
                            name=tool,
                            kind=version.kind,
                            description=version.description,
                            create_us=now,
                            update_us=now,
                        )
                    )
                else:
                    await conn.execute(
                        update(tools)
                        .where(tools.c.tenant == tenant, tools.c.name == tool)
                        .values(kind=version.kind, description=version.description, update_us=now)
                    )
                await conn.execute(
                    insert(tool_versions).values(
                        tenant=tenant,
                        tool=tool,
                        version=version.version,
                        contract_sha256=version.contract_sha256,
                        spec=version.SerializeToString(),
                        create_us=now,
                        source_artifact_id=source_artifact_id,
                    )
                )
        except IntegrityError:
            if await self._find_tool_version(tenant, tool, version.version) is None:
                # No concurrent registration won: `flnet gc` took the archive meanwhile.
                raise FailedPrecondition(
                    f"the source archive {version.source.archive} was collected while the "
                    "version was registered; upload it again",
                    violations=[("tool_version.source.archive", "no longer exists")],
                ) from None
            return await self.put_tool_version(tenant, tool, version, source_artifact_id)
        return version, True

    async def _find_tool_version(
        self, tenant: str, tool: str, version: str
    ) -> tp.ToolVersion | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(tool_versions.c.spec).where(
                        tool_versions.c.tenant == tenant,
                        tool_versions.c.tool == tool,
                        tool_versions.c.version == version,
                    )
                )
            ).first()
        return tp.ToolVersion.FromString(row.spec) if row else None

    async def get_tool_version(self, tenant: str, tool: str, version: str) -> tp.ToolVersion:
        found = await self._find_tool_version(tenant, tool, version)
        if found is None:
            raise NotFound(
                f"tool version tenants/{tenant}/tools/{tool}/versions/{version} does not exist"
            )
        return found

    async def get_tool(self, tenant: str, tool: str) -> tp.Tool:
        found = await self.list_tools(tenant, names_in=[tool])
        if not found:
            raise NotFound(f"tool {names.tool_name(tenant, tool)} does not exist")
        return found[0]

    async def list_tools(
        self,
        tenant: str,
        *,
        after: str = "",
        limit: int = 1000,
        names_in: Sequence[str] | None = None,
    ) -> list[tp.Tool]:
        q = select(tools).where(tools.c.tenant == tenant, tools.c.name > after)
        if names_in is not None:
            q = q.where(tools.c.name.in_(names_in))
        async with self.db.read() as conn:
            rows = (await conn.execute(q.order_by(tools.c.name).limit(limit))).all()
            result = []
            for r in rows:
                versions = (
                    (
                        await conn.execute(
                            select(tool_versions.c.version)
                            .where(tool_versions.c.tenant == tenant, tool_versions.c.tool == r.name)
                            .order_by(tool_versions.c.id.desc())
                        )
                    )
                    .scalars()
                    .all()
                )
                t = tp.Tool(
                    name=names.tool_name(tenant, r.name),
                    kind=r.kind,
                    description=r.description,
                    versions=list(versions),
                )
                t.create_time.CopyFrom(timestamp(r.create_us))
                t.update_time.CopyFrom(timestamp(r.update_us))
                result.append(t)
        return result

    async def list_tool_versions(
        self, tenant: str, tool: str, *, before_id: int | None, limit: int
    ) -> list[tuple[int, tp.ToolVersion]]:
        q = select(tool_versions.c.id, tool_versions.c.spec).where(
            tool_versions.c.tenant == tenant, tool_versions.c.tool == tool
        )
        if before_id is not None:
            q = q.where(tool_versions.c.id < before_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(q.order_by(tool_versions.c.id.desc()).limit(limit))).all()
        return [(r.id, tp.ToolVersion.FromString(r.spec)) for r in rows]

    async def required_outputs_of(self, conn: AsyncConnection, tool_version: str) -> frozenset[str]:
        cached = self._required_outputs.get(tool_version)
        if cached is None:
            tv = names.parse_tool_version(tool_version)
            row = (
                await conn.execute(
                    select(tool_versions.c.spec).where(
                        tool_versions.c.tenant == tv.tenant,
                        tool_versions.c.tool == tv.tool,
                        tool_versions.c.version == tv.version,
                    )
                )
            ).one()
            spec = tp.ToolVersion.FromString(row.spec)
            cached = frozenset(o.name for o in spec.outputs if o.required)
            self._required_outputs[tool_version] = cached
        return cached
