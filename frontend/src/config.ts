// Runtime configuration the gateway serves at /config.json (issuer, client id, scopes), with
// same-origin defaults when it is missing.

export interface AppConfig {
  /** OIDC issuer URL (discovery at `${issuer}/.well-known/openid-configuration`). */
  issuer: string;
  clientId: string;
  /** Space-separated scopes to ask for. */
  scopes: string;
}

export const DEFAULT_SCOPES =
  "openid profile email runs:read runs:write tools:read tools:write artifacts:read audit:read admin";

export function defaultConfig(origin: string): AppConfig {
  return { issuer: `${origin}/oidc`, clientId: "flnet-ui", scopes: DEFAULT_SCOPES };
}

/** Merges a parsed /config.json over the defaults; ignores fields of the wrong type. */
export function mergeConfig(origin: string, raw: unknown): AppConfig {
  const config = defaultConfig(origin);
  if (typeof raw !== "object" || raw === null) return config;
  const r = raw as Record<string, unknown>;
  if (typeof r["issuer"] === "string" && r["issuer"]) config.issuer = r["issuer"].replace(/\/+$/, "");
  if (typeof r["clientId"] === "string" && r["clientId"]) config.clientId = r["clientId"];
  if (typeof r["scopes"] === "string" && r["scopes"].trim()) config.scopes = r["scopes"].trim();
  return config;
}

export async function loadConfig(origin = window.location.origin): Promise<AppConfig> {
  try {
    const res = await fetch("/config.json", { cache: "no-store", credentials: "omit" });
    if (!res.ok) return defaultConfig(origin);
    return mergeConfig(origin, await res.json());
  } catch {
    return defaultConfig(origin);
  }
}
