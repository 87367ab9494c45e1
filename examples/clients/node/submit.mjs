// A Node.js client of FLNet, generated from proto/ (connect-es, gRPC over HTTP/2): submits a
// run of a tool version and follows its events until it ends.
//
//   FLNET_TOKEN=$(flnet token) node submit.mjs CONTROL_ADDRESS TOOL_VERSION [NAME=ARTIFACT ...]
//
// Prints one JSON line per state change; exits 0 when the run finished, 1 otherwise.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RunState } from "./gen/flnet/api/common/v1/lifecycle_pb.js";
import { RunService } from "./gen/flnet/api/control/v1/run_service_pb.js";

const [address, toolVersion, ...pairs] = process.argv.slice(2);
const token = process.env.FLNET_TOKEN;
if (!address || !toolVersion || !token) {
  console.error("usage: FLNET_TOKEN=... node submit.mjs ADDRESS TOOL_VERSION [NAME=ARTIFACT ...]");
  process.exit(2);
}
const tenant = toolVersion.split("/tools/")[0]; // "tenants/{tenant}"

const transport = createGrpcTransport({
  baseUrl: `http://${address}`,
  interceptors: [
    (next) => async (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ],
});
const runs = createClient(RunService, transport);

const inputs = pairs.map((pair) => {
  const [name, artifact] = pair.split("=");
  return { name, artifact };
});
const { run } = await runs.createRun({
  parent: tenant,
  requestId: crypto.randomUUID(), // a retried CreateRun creates no second run
  run: { toolVersion, config: {}, inputs },
});
console.log(JSON.stringify({ run: run.name, state: RunState[run.state] }));

let last = run.state;
for await (const response of runs.watchRun({ name: run.name })) {
  for (const event of response.events) {
    if (event.event.case === "stateChange") {
      last = event.event.value.toState;
      console.log(JSON.stringify({ run: run.name, state: RunState[last] }));
    }
  }
}
process.exit(last === RunState.FINISHED ? 0 : 1);
