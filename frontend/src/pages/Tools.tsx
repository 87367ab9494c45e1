// Tool catalogue: every tool of the tenant, and one tool's versions with their contract
// (artifact digest, configuration schema, inputs, outputs, resources, timeouts).
import { Code } from "@connectrpc/connect";
import { useState, type ReactNode } from "react";
import { api } from "../api/client";
import { toProblem } from "../api/errors";
import { DataTable, Digest, Empty, Facts, Loading, NotFoundView, PageTitle, ProblemView } from "../components/common";
import type { IoSpec } from "../gen/flnet/api/common/v1/io_pb";
import type { ToolVersion } from "../gen/flnet/api/control/v1/tool_pb";
import { listAllVersions } from "../lib/cache";
import { formatBytes, formatDuration, formatTime, isoTime } from "../lib/format";
import { parseToolId, toolName } from "../lib/names";
import { buildFormModel, constraintSummary, displayValue, typeLabel } from "../lib/schemaForm";
import { useAsync, useDocumentTitle } from "../lib/useAsync";
import { Link } from "../router";

export function ToolsPage() {
  useDocumentTitle("Tools");
  const [tokens, setTokens] = useState<string[]>([""]);
  const token = tokens[tokens.length - 1]!;
  const list = useAsync((signal) => api().tools.listTools({ parent: api().parent(), pageSize: 50, pageToken: token }, { signal }), [token]);
  const tools = list.data?.tools ?? [];
  return (
    <section className="page" aria-labelledby="tools-title">
      <PageTitle>
        <span id="tools-title">Tools</span>
      </PageTitle>
      <p className="lead">The tools registered in your tenant. Each version pins its code by digest and declares its contract.</p>
      {list.loading && !list.data && <Loading label="Loading tools…" />}
      {list.error !== undefined && <ProblemView error={list.error} what="list tools" onRetry={list.reload} />}
      {list.data && tools.length === 0 && (
        <Empty>
          No tools are registered yet. Register one with <code>flnet tool register &lt;dir&gt;</code>.
        </Empty>
      )}
      {tools.length > 0 && (
        <DataTable caption="Tools" columns={["Name", "Kind", "Versions", "Description", "Updated"]}>
          {tools.map((t) => {
            const id = parseToolId(t.name) ?? t.name;
            return (
              <tr key={t.name}>
                <td>
                  <Link to={`/tools/${encodeURIComponent(id)}`}>{id}</Link>
                </td>
                <td>{t.kind || "—"}</td>
                <td>{t.versions.join(", ") || "—"}</td>
                <td className="desc">{t.description}</td>
                <td>
                  <time dateTime={isoTime(t.updateTime)}>{formatTime(t.updateTime)}</time>
                </td>
              </tr>
            );
          })}
        </DataTable>
      )}
      {(tokens.length > 1 || list.data?.nextPageToken) && (
        <nav className="pagination" aria-label="Pagination">
          <button type="button" className="secondary" disabled={tokens.length <= 1} onClick={() => setTokens(tokens.slice(0, -1))}>
            Previous page
          </button>
          <span className="muted">Page {tokens.length}</span>
          <button
            type="button"
            className="secondary"
            disabled={!list.data?.nextPageToken}
            onClick={() => setTokens([...tokens, list.data!.nextPageToken])}
          >
            Next page
          </button>
        </nav>
      )}
    </section>
  );
}

export function ToolPage({ toolId, versionId }: { toolId: string; versionId?: string }) {
  useDocumentTitle(versionId ? `${toolId} ${versionId}` : toolId);
  const name = toolName(api().tenant(), toolId);
  const data = useAsync(
    async (signal) => {
      const [tool, versions] = await Promise.all([api().tools.getTool({ name }, { signal }), listAllVersions(name, signal)]);
      return { tool: tool.tool!, versions };
    },
    [name],
  );
  if (data.error !== undefined && toProblem(data.error).code === Code.NotFound) {
    return <NotFoundView title="Tool not found" message={`There is no tool ${toolId} in your tenant.`} />;
  }
  const versions = data.data?.versions ?? [];
  const selected = versionId ? versions.find((v) => v.version === versionId) : versions[0];
  return (
    <section className="page" aria-labelledby="tool-title">
      <nav aria-label="Breadcrumb" className="breadcrumb">
        <ol>
          <li>
            <Link to="/tools">Tools</Link>
          </li>
          <li>
            <span aria-current="page">{toolId}</span>
          </li>
        </ol>
      </nav>
      <div className="page-head">
        <PageTitle>
          <span id="tool-title">{toolId}</span>
        </PageTitle>
        {selected && (
          <Link to={`/runs/new?tool=${encodeURIComponent(toolId)}&version=${encodeURIComponent(selected.version)}`} className="button">
            Submit a run with {selected.version}
          </Link>
        )}
      </div>
      {data.loading && !data.data && <Loading label="Loading tool…" />}
      {data.error !== undefined && <ProblemView error={data.error} what="show this tool" onRetry={data.reload} />}
      {data.data && (
        <>
          <p className="lead">{data.data.tool.description}</p>
          <nav aria-label="Versions" className="versions">
            <h2 className="inline-heading">Versions</h2>
            <ul>
              {versions.map((v, i) => (
                <li key={v.name}>
                  <Link
                    to={`/tools/${encodeURIComponent(toolId)}/versions/${encodeURIComponent(v.version)}`}
                    aria-current={v === selected ? "page" : undefined}
                  >
                    {v.version}
                    {i === 0 ? " (latest)" : ""}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
          {versionId && !selected && (
            <p role="alert" className="problem">
              Not found: {toolId} has no version {versionId}.
            </p>
          )}
          {selected && <VersionDetails version={selected} />}
        </>
      )}
    </section>
  );
}

export function VersionDetails({ version: v }: { version: ToolVersion }) {
  const model = buildFormModel(v.configSchema ?? null);
  const artifact = v.artifact;
  return (
    <>
      <section className="card" aria-labelledby="version-title">
        <h2 id="version-title">Version {v.version}</h2>
        <Facts
          items={[
            ["Description", v.description || "—"],
            ["Kind", v.kind || "—"],
            ...(artifact.case === "image"
              ? ([
                  ["Image", <code key="i">{artifact.value.reference}</code>],
                  ["Image digest", <Digest key="d" value={artifact.value.digest} />],
                  ["Entrypoint", <code key="e">{artifact.value.entrypoint}</code>],
                ] as [string, ReactNode][])
              : artifact.case === "source"
                ? ([
                    ["Source archive", <code key="p">{artifact.value.archive}</code>],
                    ["Source digest", <Digest key="d" value={artifact.value.sha256} />],
                    ["Entrypoint", <code key="e">{artifact.value.entrypoint}</code>],
                  ] as [string, ReactNode][])
                : []),
            ["Contract sha256", <Digest key="c" value={v.contractSha256} />],
            ["Registered", formatTime(v.createTime)],
            ["Resource name", <code key="n">{v.name}</code>],
          ]}
        />
      </section>
      <section className="card" aria-labelledby="contract-title">
        <h2 id="contract-title">Configuration contract</h2>
        {model.fields.length === 0 ? (
          <p className="empty">No configuration.</p>
        ) : (
          <DataTable caption="Configuration settings" columns={["Setting", "Type", "Required", "Default", "Constraints", "Description"]}>
            {model.fields.map((f) => (
              <tr key={f.key}>
                <td>
                  <code>{f.key}</code>
                </td>
                <td>{typeLabel(f)}</td>
                <td>{f.required ? "yes" : "no"}</td>
                <td>{f.hasDefault ? <code>{displayValue(f.default)}</code> : "—"}</td>
                <td className="small">{constraintSummary({ ...f, hasDefault: false }) || "—"}</td>
                <td className="desc">{f.description ?? ""}</td>
              </tr>
            ))}
          </DataTable>
        )}
        {!model.additionalProperties && <p className="muted small">Settings not listed here are rejected.</p>}
        <details>
          <summary>JSON Schema</summary>
          <pre className="config-json" tabIndex={0}>
            {JSON.stringify(v.configSchema ?? {}, null, 2)}
          </pre>
        </details>
      </section>
      <section className="card" aria-labelledby="inputs-title">
        <h2 id="inputs-title">Inputs</h2>
        <IoTable items={v.inputs} caption="Declared inputs" />
      </section>
      <section className="card" aria-labelledby="outputs-title">
        <h2 id="outputs-title">Outputs</h2>
        <IoTable items={v.outputs} caption="Declared outputs" />
      </section>
      <section className="card" aria-labelledby="limits-title">
        <h2 id="limits-title">Resources and timeouts</h2>
        <Facts
          items={[
            ["CPU", v.resources?.cpuMillis ? cores(Number(v.resources.cpuMillis)) : "unlimited"],
            ["Memory", v.resources?.memoryBytes ? formatBytes(v.resources.memoryBytes) : "platform default"],
            ["Processes", v.resources?.pids ? String(v.resources.pids) : "platform default"],
            ["Deadline", formatDuration(v.timeouts?.deadline)],
            ["Inactivity timeout", formatDuration(v.timeouts?.inactivity)],
            ["Connect timeout", formatDuration(v.timeouts?.connect)],
            ["Cancel grace period", formatDuration(v.timeouts?.cancelGrace)],
          ]}
        />
      </section>
    </>
  );
}

function IoTable({ items, caption }: { items: IoSpec[]; caption: string }) {
  if (items.length === 0) return <p className="empty">None.</p>;
  return (
    <DataTable caption={caption} columns={["Name", "Media type", "Required", "Size limit", "Description"]}>
      {items.map((i) => (
        <tr key={i.name}>
          <td>
            <code>{i.name}</code>
          </td>
          <td>
            <code>{i.mediaType}</code>
          </td>
          <td>{i.required ? "yes" : "no"}</td>
          <td>{i.maxSizeBytes ? formatBytes(i.maxSizeBytes) : "platform default"}</td>
          <td className="desc">{i.description}</td>
        </tr>
      ))}
    </DataTable>
  );
}

/** A CPU limit in millicores, as people say it: "1 core", "2.5 cores". */
function cores(millis: number): string {
  const n = millis / 1000;
  return `${n} ${n === 1 ? "core" : "cores"}`;
}
