"""Provenance schema (SQLAlchemy Core). Alembic migrations in control/migrations create it.

Times are integer microseconds since the epoch: portable across SQLite and PostgreSQL and
cheap to compare. Immutable parts of a resource are kept as its serialized protobuf
(`spec`), while everything the API filters or updates has a column of its own."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

tools = Table(
    "tools",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("kind", String(63), nullable=False),
    Column("description", Text, nullable=False),
    Column("create_us", BigInteger, nullable=False),
    Column("update_us", BigInteger, nullable=False),
)

tool_versions = Table(
    "tool_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(63), nullable=False),
    Column("tool", String(63), nullable=False),
    Column("version", String(63), nullable=False),
    Column("contract_sha256", String(64), nullable=False),
    Column("spec", LargeBinary, nullable=False),  # flnet.api.control.v1.ToolVersion
    Column("create_us", BigInteger, nullable=False),
    # The uploaded archive a source version runs (kept from retention while named here).
    Column(
        "source_artifact_id",
        String(63),
        ForeignKey("artifacts.id", name="fk_tool_versions_source_artifact"),
    ),
    UniqueConstraint("tenant", "tool", "version", name="uq_tool_versions_name"),
    Index("ix_tool_versions_source_artifact", "source_artifact_id"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("tool", String(63), nullable=False),
    Column("tool_version", String(255), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("spec", LargeBinary, nullable=False),  # immutable part of the Run message
    Column("error", LargeBinary),  # RunError
    Column("cancellation", LargeBinary),  # Cancellation
    Column("progress", LargeBinary),  # Progress
    Column("last_sequence", BigInteger, nullable=False, default=0),
    Column("last_batch", BigInteger, nullable=False, default=0),
    Column("request_id", String(255)),
    Column("request_sha256", String(64)),
    Column("credential_sha256", String(64), nullable=False),
    # When a replica last heard the run's engine (written every few seconds by the replica
    # it is connected to): every replica judges heartbeat leases by it.
    Column("engine_seen_us", BigInteger),
    Column("dev_session_run", String(63)),
    Column("create_us", BigInteger, nullable=False),
    Column("update_us", BigInteger, nullable=False),
    Column("start_us", BigInteger),
    Column("end_us", BigInteger),
    Column("deadline_us", BigInteger),
    # When `flnet gc` dropped the run's telemetry (logs, metrics, progress) from its history,
    # keeping the provenance events; NULL while the history is whole.
    Column("telemetry_dropped_us", BigInteger),
    # Placement (control.fleet). A run to be placed is queued (`queued_us`: since when, the
    # order of its tenant's queue) until the scheduler assigns it to an orchestrator
    # (`orchestrator`, `assigned_us`); `launched_us` once that orchestrator started it. What
    # it reserves there is copied from its tool version, so that loads are sums of columns.
    Column("queued_us", BigInteger),
    Column("queue_reason", Text),
    Column("orchestrator", String(63)),
    Column("assigned_us", BigInteger),
    Column("launched_us", BigInteger),
    Column("cpu_millis", BigInteger, nullable=False, server_default="0"),
    Column("memory_bytes", BigInteger, nullable=False, server_default="0"),
    Column("required_labels", Text, nullable=False, server_default=""),
    # A stop the run's orchestrator is to carry out (grace in ms), until it confirms it.
    Column("stop_grace_ms", BigInteger),
    UniqueConstraint("tenant", "request_id", name="uq_runs_request_id"),
    # ListRuns: a tenant's runs newest first, or those of one tool (or tool version), or in
    # some states; each index holds them in the listing's order.
    Index("ix_runs_tenant_created", "tenant", "create_us", "id"),
    Index("ix_runs_tenant_tool_created", "tenant", "tool", "create_us", "id"),
    Index("ix_runs_tenant_version_created", "tenant", "tool_version", "create_us", "id"),
    Index("ix_runs_tenant_state_created", "tenant", "state", "create_us", "id"),
    # The runs not ended yet, of every tenant (supervision, restarts).
    Index("ix_runs_state", "state"),
    Index("ix_runs_credential", "credential_sha256"),
    # The queue, a tenant's runs in order; the runs placed on an orchestrator.
    Index(
        "ix_runs_queued",
        "tenant",
        "queued_us",
        "id",
        sqlite_where=text("queued_us IS NOT NULL"),
        postgresql_where=text("queued_us IS NOT NULL"),
    ),
    Index("ix_runs_orchestrator", "orchestrator", "state"),
    # What placed runs not ended reserve, by orchestrator or tenant (the scheduler's sums).
    Index(
        "ix_runs_placed",
        "orchestrator",
        "tenant",
        sqlite_where=text("orchestrator IS NOT NULL AND end_us IS NULL"),
        postgresql_where=text("orchestrator IS NOT NULL AND end_us IS NULL"),
    ),
    # Ended runs whose telemetry gc has not dropped yet, by when they ended.
    Index(
        "ix_runs_telemetry_kept",
        "end_us",
        "id",
        sqlite_where=text("telemetry_dropped_us IS NULL"),
        postgresql_where=text("telemetry_dropped_us IS NULL"),
    ),
)

# The orchestrators that ever attached (control.fleet): what they can run, their labels, and
# their session: which replica holds it (`session`), when it was last heard, and the highest
# report sequence processed.
orchestrators = Table(
    "orchestrators",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("backend", String(63), nullable=False),
    Column("hostname", Text, nullable=False),
    Column("labels", Text, nullable=False),  # JSON object
    Column("cpu_millis", BigInteger, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("run_slots", Integer, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("session", String(63), nullable=False),
    Column("attach_us", BigInteger, nullable=False),
    Column("seen_us", BigInteger, nullable=False),
    Column("acked_sequence", BigInteger, nullable=False),
)

# Per-tenant quotas set by an operator (a tenant without a row has the defaults).
tenant_quotas = Table(
    "tenant_quotas",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("max_runs", Integer, nullable=False),
    Column("max_cpu_millis", BigInteger, nullable=False),
    Column("max_memory_bytes", BigInteger, nullable=False),
    Column("update_us", BigInteger, nullable=False),
    Column("updated_by", Text, nullable=False),
)

# Why a tenant's queue waits (its head's reason, control.fleet.scheduler), written when it
# changes; the tenant's queued runs show it unless they have a reason of their own.
tenant_queues = Table(
    "tenant_queues",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("update_us", BigInteger, nullable=False),
)

run_events = Table(
    "run_events",
    metadata,
    Column("run_id", String(63), primary_key=True),
    Column("first_seq", BigInteger, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),  # RunEventSegment
    Index("ix_run_events_last_seq", "run_id", "last_seq"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("direction", SmallInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("run_id", String(63)),
    Column("output_name", String(63)),
    Column("storage_uri", Text, nullable=False),
    Column("create_us", BigInteger, nullable=False),
    # When its content was last uploaded (an upload of identical content that finds this
    # input refreshes it; an output's is its creation): gc spares inputs uploaded within its
    # grace period, so a name an upload just returned is not collected under its holder.
    # Every insert sets it; a row without one is never collected.
    Column("uploaded_us", BigInteger),
    UniqueConstraint("run_id", "output_name", name="uq_artifacts_output"),
    Index("ix_artifacts_tenant_created", "tenant", "create_us", "id"),
    Index("ix_artifacts_tenant_sha", "tenant", "sha256", "direction"),
    # Identical content in a tenant is one input artifact, whoever uploads it at once.
    Index(
        "uq_artifacts_input",
        "tenant",
        "sha256",
        unique=True,
        sqlite_where=text("direction = 1"),  # ARTIFACT_DIRECTION_INPUT
        postgresql_where=text("direction = 1"),
    ),
    # gc: inputs by when they were last uploaded; which artifacts record a stored blob (by
    # its URI, or by its content where the store keeps one copy per content).
    Index("ix_artifacts_direction_uploaded", "direction", "uploaded_us", "id"),
    Index("ix_artifacts_storage_uri", "storage_uri"),
    Index("ix_artifacts_sha256", "sha256"),
)

# The artifacts each run reads, one row per bound input, inserted in the transaction that
# creates the run (the same bindings are in the run's spec). The foreign key is what keeps an
# artifact a run references from being deleted by gc: on PostgreSQL the key check of the
# insert locks the artifact's row (KEY SHARE) against gc's DELETE, and a DELETE of a
# referenced row fails; SQLite checks foreign keys too (PRAGMA foreign_keys=ON on every
# connection, control.database.create_engine).
run_inputs = Table(
    "run_inputs",
    metadata,
    Column(
        "run_id",
        String(63),
        ForeignKey("runs.id", name="fk_run_inputs_run"),
        primary_key=True,
    ),
    Column("name", String(63), primary_key=True),  # the declared input
    Column(
        "artifact_id",
        String(63),
        ForeignKey("artifacts.id", name="fk_run_inputs_artifact"),
        nullable=False,
    ),
    Index("ix_run_inputs_artifact", "artifact_id"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("total_size", BigInteger, nullable=False),
    Column("committed_size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("finished", Boolean, nullable=False, default=False),
    Column("create_us", BigInteger, nullable=False),
    Column("expire_us", BigInteger, nullable=False),
)

# The audit log (flnet.server.auth.audit.AuditRecord, one row per guarded call), written in
# batches by control.store.audit.AuditLog. `id` is the monotonic sequence the API pages by
# (BIGINT on PostgreSQL; SQLite autoincrements only an INTEGER primary key, and AUTOINCREMENT
# never reuses an id). A call whose credential was refused has no trusted tenant: it is stored
# with tenant "" and listed for no tenant, only kept for operators. Free-form columns are Text:
# their values come from callers (bounded in length by the audit log, not by the schema).
audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", Text, nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("duration_us", BigInteger, nullable=False),
    Column("subject", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("audience", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("resource", Text, nullable=False),
    Column("code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_audit_events_tenant_id", "tenant", "id"),
    sqlite_autoincrement=True,
)
