"""flnet.orchestrator: starts, watches and stops the engines of runs (DESIGN.md §7).

Modules: `backend` (domain types and the Backend protocol), `process_backend` (engines as
local subprocesses), `limits` (the rlimit exec wrapper), `engine_env` (the engine's
environment contract), `events` (the replayable event log), `convert` and `service` (the
gRPC servicer), `app` (OrchestratorApp), `settings` and
`__main__` (``python -m flnet.orchestrator``).

This package's import is kept free of gRPC: ``python -m flnet.orchestrator.limits`` runs it
before every engine start. The server: ``from flnet.orchestrator.app import OrchestratorApp``.
"""
