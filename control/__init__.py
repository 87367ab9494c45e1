"""flnet.control: the control plane (DESIGN.md §3). It authenticates callers, validates runs
against their tools' schemas, records everything as provenance, places queued runs on the
orchestrators attached to it and holds each engine's Connect stream and each orchestrator's
Attach stream.

Layout, top down (an import-linter contract keeps each layer from importing those above it):
`app` (ControlApp: wiring and supervision loops) → `services` (the gRPC servicers: proto in,
proto out) → `runs` (the run logic, one module per job, behind RunController and
EngineSessions) → `store` (the provenance database: records, does not decide). Beside them:
`verdicts` (the lifecycle's decisions, pure), `blobs` (artifact bytes: local files or S3),
`retention` (gc), `sessions`, `news` and `notifications` (live events, across replicas),
`fleet` (the scheduler, the placement loop, the orchestrators' links), `names`,
`validation`, `export` (RO-Crate).

May import: the shared core (`flnet.*`, `flnet.server`), never another component
(orchestrator, runtime, gateway, issuer): those are reached over gRPC or HTTP only."""
