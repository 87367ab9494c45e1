"""The Python client of FLNet's control plane: typed calls for tools, runs, artifacts and
development sessions over one gRPC channel, with the bearer token attached to every call and
retries of the calls that are safe to repeat (flnet.channels). The `flnet` command line is
built on it; scripts and notebooks use it the same way:

    from flnet.client import FlnetClient

    async with FlnetClient("127.0.0.1:50051", token) as c:
        version = (await c.register_tool(Path("examples/tools/csv_stats"))).tool_version
        artifact = await c.upload(Path("sample.csv"), "text/csv")
        run = (await c.submit(version.name, {}, {"data": artifact.name})).run
        async for event in c.watch(run.name):
            ...

It needs the runtime's dependencies only (grpcio, protobuf) and PyYAML for tool.yaml.
"""

from .control import FlnetClient, compare_outputs, tenant_of
from .errors import CallError
from .tokens import unverified_claims

__all__ = ["CallError", "FlnetClient", "compare_outputs", "tenant_of", "unverified_claims"]
