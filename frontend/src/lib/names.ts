// Resource names of the API (AIP-122) and the UI paths derived from them. The tenant is
// implicit in the UI's URLs: it is the signed-in user's `tenant` claim.

/** Last segment of a resource name: "tenants/t/runs/r-1" → "r-1". */
export function lastSegment(name: string): string {
  const i = name.lastIndexOf("/");
  return i < 0 ? name : name.slice(i + 1);
}

export function tenantName(tenant: string): string {
  return `tenants/${tenant}`;
}

export function toolName(tenant: string, tool: string): string {
  return `tenants/${tenant}/tools/${tool}`;
}

export function toolVersionName(tenant: string, tool: string, version: string): string {
  return `tenants/${tenant}/tools/${tool}/versions/${version}`;
}

export function runName(tenant: string, run: string): string {
  return `tenants/${tenant}/runs/${run}`;
}

export interface ParsedToolVersion {
  tenant: string;
  tool: string;
  version: string;
}

/** "tenants/t/tools/x/versions/1.0.0" → parts, or null. */
export function parseToolVersion(name: string): ParsedToolVersion | null {
  const m = /^tenants\/([^/]+)\/tools\/([^/]+)\/versions\/([^/]+)$/.exec(name);
  return m ? { tenant: m[1]!, tool: m[2]!, version: m[3]! } : null;
}

/** "tenants/t/tools/x" (or a version of it) → "x", or null. */
export function parseToolId(name: string): string | null {
  const m = /^tenants\/[^/]+\/tools\/([^/]+)(\/versions\/[^/]+)?$/.exec(name);
  return m ? m[1]! : null;
}

/** UI path of a run: "/runs/{run}". */
export function runPath(name: string): string {
  return `/runs/${encodeURIComponent(lastSegment(name))}`;
}

/** UI path of a tool ("/tools/{tool}") or tool version ("/tools/{tool}/versions/{v}"). */
export function toolPath(name: string): string {
  const v = parseToolVersion(name);
  if (v) return `/tools/${encodeURIComponent(v.tool)}/versions/${encodeURIComponent(v.version)}`;
  const t = parseToolId(name);
  return t ? `/tools/${encodeURIComponent(t)}` : "/tools";
}

/** Short label of a tool version: "logreg 1.0.0". */
export function toolVersionLabel(name: string): string {
  const v = parseToolVersion(name);
  return v ? `${v.tool} ${v.version}` : name;
}
