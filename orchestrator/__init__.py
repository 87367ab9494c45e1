"""flnet.orchestrator: starts, watches and stops the engines of runs (DESIGN.md §7).

Modules: `backend` (domain types and the Backend protocol), `supervisor` (what every backend
shares: run table, deadlines, termination, exit events), `workdir` (a run's host work dir),
`output_tail` (last output lines), `process_backend` (engines as local subprocesses) with
`limits` (the rlimit exec wrapper), `docker_backend` (engines in Docker containers) with
`docker_container` (the container's profile) and `docker_state` (reading inspect output),
`swarm_backend` (engines as Docker Swarm services) with `swarm_service` (the service's spec
and task states), `docker_engine` (what both Docker backends share), `engine_env` (the
engine's environment contract), `events` (the backend's event log), `link` (the session with
the control plane) with `outbox` (reports kept until acknowledged) and `convert` (contract
messages to domain types), `app` (OrchestratorApp), `settings` and `__main__`
(``python -m flnet.orchestrator``).

May import: the shared core (`flnet.*`, `flnet.server`), never another component (control,
runtime, gateway, issuer). This package's import is kept free of gRPC:
``python -m flnet.orchestrator.limits`` runs it before every engine start. The
orchestrator: ``from flnet.orchestrator.app import OrchestratorApp``.
"""
