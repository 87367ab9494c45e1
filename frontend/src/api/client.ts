// gRPC-web clients generated from proto/ (protoc-gen-es service descriptors), over one
// transport to this origin (Envoy translates gRPC-web to gRPC). Every call carries the
// signed-in user's access token.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ArtifactService } from "../gen/flnet/api/control/v1/artifact_service_pb";
import { AuditService } from "../gen/flnet/api/control/v1/audit_service_pb";
import { RunService } from "../gen/flnet/api/control/v1/run_service_pb";
import { ToolService } from "../gen/flnet/api/control/v1/tool_service_pb";
import type { AuthSession } from "../auth/session";

export interface Api {
  tools: Client<typeof ToolService>;
  runs: Client<typeof RunService>;
  artifacts: Client<typeof ArtifactService>;
  audit: Client<typeof AuditService>;
  /** "tenants/{tenant}" of the signed-in user. */
  parent: () => string;
  tenant: () => string;
}

let current: Api | undefined;

export function api(): Api {
  if (!current) throw new Error("the API is used before sign-in");
  return current;
}

/** Adds the bearer token; a unary call refused as UNAUTHENTICATED is tried once more after
 * renewing the token, then the session ends (the UI asks to sign in again). */
export function authInterceptor(session: AuthSession): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${await session.accessToken()}`);
    try {
      return await next(req);
    } catch (e) {
      if (!(e instanceof ConnectError) || e.code !== Code.Unauthenticated) throw e;
      if (!req.stream) {
        try {
          await session.refresh();
          req.header.set("authorization", `Bearer ${await session.accessToken()}`);
          return await next(req);
        } catch (retryError) {
          if (retryError instanceof ConnectError && retryError.code !== Code.Unauthenticated) throw retryError;
        }
      }
      session.expire("the server did not accept your credentials");
      throw e;
    }
  };
}

export function initApi(session: AuthSession, baseUrl = window.location.origin): Api {
  const transport = createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors: [authInterceptor(session)],
  });
  const tenant = () => (session.status.kind === "signed-in" ? session.status.user.tenant : "");
  current = {
    tools: createClient(ToolService, transport),
    runs: createClient(RunService, transport),
    artifacts: createClient(ArtifactService, transport),
    audit: createClient(AuditService, transport),
    tenant,
    parent: () => `tenants/${tenant()}`,
  };
  return current;
}
