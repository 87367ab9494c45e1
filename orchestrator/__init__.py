"""flnet.orchestrator: starts, watches and stops the engines of runs (DESIGN.md §7).

Modules: `backend` (domain types and the Backend protocol), `supervisor` (what every backend
shares: run table, deadlines, termination, exit events), `workdir` (a run's host work dir),
`output_tail` (last output lines), `process_backend` (engines as local subprocesses) with
`limits` (the rlimit exec wrapper), `docker_backend` (engines in Docker containers) with
`docker_container` (the container's profile) and `docker_state` (reading inspect output),
`engine_env` (the engine's environment contract), `events` (the replayable event log),
`convert` and `service` (the gRPC servicer), `app` (OrchestratorApp), `settings` and
`__main__` (``python -m flnet.orchestrator``).

May import: the shared core (`flnet.*`, `flnet.server`), never another component (control,
runtime, gateway, issuer). This package's import is kept free of gRPC:
``python -m flnet.orchestrator.limits`` runs it before every engine start. The server:
``from flnet.orchestrator.app import OrchestratorApp``.
"""
