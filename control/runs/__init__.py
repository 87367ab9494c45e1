"""The run logic of the control plane, one module per job: admission (accepting runs),
launching (a container for each; waiting while no orchestrator answers), cancellation,
dev_sessions, engine_sessions (the engines' protocol), relay (other replicas' decisions passed
on to engines connected here), supervision (timeouts and container exits) and watching, over
a shared RunContext. Services reach it through RunController (users) and
EngineSessions (engines); the rules of the lifecycle are control.verdicts."""

from flnet.control.runs.context import RunContext
from flnet.control.runs.controller import ExportSources, RunController
from flnet.control.runs.engine_sessions import EngineSessions

__all__ = ["EngineSessions", "ExportSources", "RunContext", "RunController"]
