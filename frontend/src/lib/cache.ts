// Resources cached by resource name. Tool versions are immutable, so they are kept for the
// session; anything else is read through.
import { api } from "../api/client";
import type { ToolVersion } from "../gen/flnet/api/control/v1/tool_pb";

const versions = new Map<string, ToolVersion>();

export function rememberVersions(list: readonly ToolVersion[]): void {
  for (const v of list) versions.set(v.name, v);
}

export async function getToolVersion(name: string, signal?: AbortSignal): Promise<ToolVersion> {
  const hit = versions.get(name);
  if (hit) return hit;
  const res = await api().tools.getToolVersion({ name }, signal ? { signal } : {});
  if (!res.toolVersion) throw new Error(`no tool version in the response for ${name}`);
  versions.set(name, res.toolVersion);
  return res.toolVersion;
}

/** All versions of a tool, newest first (every page). */
export async function listAllVersions(parent: string, signal?: AbortSignal): Promise<ToolVersion[]> {
  const out: ToolVersion[] = [];
  let pageToken = "";
  do {
    const res = await api().tools.listToolVersions({ parent, pageSize: 1000, pageToken }, signal ? { signal } : {});
    out.push(...res.toolVersions);
    pageToken = res.nextPageToken;
  } while (pageToken);
  rememberVersions(out);
  return out;
}
