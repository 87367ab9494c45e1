// A run's outputs: name, size, sha256, media type; download with the sha256 computed in the
// browser over the streamed chunks and compared with the recorded one before the file is
// saved; previews of text, CSV, JSON, HTML (sandboxed iframe) and images.
import { memo, useEffect, useMemo, useRef, useState } from "react";
import { api } from "../api/client";
import { isStreamRetryable, toProblem } from "../api/errors";
import type { Artifact } from "../gen/flnet/api/control/v1/artifact_pb";
import { parseCsv, sniffDelimiter } from "../lib/csv";
import { concat, downloadChunks, saveBytes, verify } from "../lib/download";
import { formatBytes } from "../lib/format";
import { Digest, ProgressBar } from "./common";

const PREVIEW_LIMIT = 8 * 1024 * 1024;

type Fetched = { chunks: Uint8Array[]; size: number; sha256: string; verified: boolean; recorded: string };

/** Streams an artifact, verifying its sha256 against the recorded one. */
async function fetchArtifact(artifact: Artifact, signal: AbortSignal, onProgress: (n: number) => void): Promise<Fetched> {
  const result = await downloadChunks({
    signal,
    onProgress,
    isRetryable: isStreamRetryable,
    open: async function* (offset, sig) {
      for await (const res of api().artifacts.downloadArtifact({ name: artifact.name, offset: BigInt(offset) }, { signal: sig })) {
        yield { offset: Number(res.offset), data: res.data };
      }
    },
  });
  const v = verify(result.sha256, artifact.sha256);
  return { ...result, verified: v.ok, recorded: artifact.sha256 };
}

function fileName(a: Artifact): string {
  return a.filename || a.outputName || a.name.split("/").pop() || "output";
}

export function OutputsView({ outputs, runId, headingLevel = 3 }: { outputs: Artifact[]; runId: string; headingLevel?: 3 | 4 }) {
  if (outputs.length === 0) return <p className="empty">No outputs yet.</p>;
  return (
    <ul className="outputs">
      {outputs.map((o) => (
        <OutputItem key={o.name} artifact={o} runId={runId} H={headingLevel === 3 ? "h3" : "h4"} />
      ))}
    </ul>
  );
}

type Status =
  | { kind: "idle" }
  | { kind: "busy"; action: "download" | "preview"; received: number }
  | { kind: "verified"; sha256: string }
  | { kind: "mismatch"; computed: string; recorded: string }
  | { kind: "error"; message: string };

// Memoized: the run page re-renders once per animation frame while events stream in.
const OutputItem = memo(function OutputItem({ artifact, runId, H }: { artifact: Artifact; runId: string; H: "h3" | "h4" }) {
  const [status, setStatus] = useState<Status>({ kind: "idle" });
  const [saved, setSaved] = useState<{ url: string; name: string } | null>(null);
  const [preview, setPreview] = useState<Fetched | null>(null);
  const ctl = useRef<AbortController | null>(null);
  const label = artifact.outputName || fileName(artifact);
  const total = Number(artifact.sizeBytes);

  useEffect(() => () => ctl.current?.abort(), []);
  useEffect(() => () => (saved ? URL.revokeObjectURL(saved.url) : undefined), [saved]);

  async function run(action: "download" | "preview") {
    ctl.current?.abort();
    const c = new AbortController();
    ctl.current = c;
    setStatus({ kind: "busy", action, received: 0 });
    try {
      const f = await fetchArtifact(artifact, c.signal, (received) => setStatus({ kind: "busy", action, received }));
      if (!f.verified) {
        setStatus({ kind: "mismatch", computed: f.sha256, recorded: f.recorded });
        return;
      }
      setStatus({ kind: "verified", sha256: f.sha256 });
      if (action === "download") {
        const name = fileName(artifact);
        const url = saveBytes(f.chunks as BlobPart[], name, artifact.mediaType);
        setSaved({ url, name });
      } else {
        setPreview(f);
      }
    } catch (e) {
      if (c.signal.aborted) return;
      setStatus({ kind: "error", message: toProblem(e).message });
    }
  }

  const busy = status.kind === "busy";
  const headingId = `out-${runId}-${label}`.replace(/[^A-Za-z0-9_-]/g, "_");
  return (
    <li className="output">
      <H id={headingId}>{label}</H>
      <dl className="facts compact">
        <div className="fact">
          <dt>Size</dt>
          <dd>
            {formatBytes(total)} ({total.toLocaleString("en-US")} bytes)
          </dd>
        </div>
        <div className="fact">
          <dt>Media type</dt>
          <dd>
            <code>{artifact.mediaType || "—"}</code>
          </dd>
        </div>
        <div className="fact wide">
          <dt>sha256</dt>
          <dd>
            <Digest value={artifact.sha256} />
          </dd>
        </div>
      </dl>
      <div className="actions">
        <button type="button" onClick={() => void run("download")} disabled={busy} aria-label={`Download ${label}`}>
          Download
        </button>
        <button
          type="button"
          className="secondary"
          onClick={() => (preview ? setPreview(null) : void run("preview"))}
          disabled={busy || total > PREVIEW_LIMIT}
          aria-label={`${preview ? "Hide preview of" : "Preview"} ${label}`}
          aria-expanded={!!preview}
        >
          {preview ? "Hide preview" : "Preview"}
        </button>
        {total > PREVIEW_LIMIT && <span className="muted">Too large to preview.</span>}
      </div>
      {busy && (
        <ProgressBar value={total ? status.received / total : 0} label={`${status.action === "download" ? "Download" : "Preview"} progress of ${label}`} text={`${formatBytes(status.received)} of ${formatBytes(total)}`} />
      )}
      <div role="status" className="verify-status">
        {status.kind === "verified" && (
          <span className="ok">
            <span aria-hidden="true">✓ </span>sha256 verified
          </span>
        )}
      </div>
      {status.kind === "mismatch" && (
        <div role="alert" className="problem">
          <p className="problem-title">sha256 mismatch: the downloaded bytes do not match the recorded checksum. The file was not saved.</p>
          <p>
            Recorded <Digest value={status.recorded} />
            <br />
            Computed <Digest value={status.computed} />
          </p>
        </div>
      )}
      {status.kind === "error" && (
        <div role="alert" className="problem">
          <p className="problem-title">Could not download {label}: {status.message}</p>
        </div>
      )}
      {saved && (
        <p className="muted small">
          Saved as {saved.name}.{" "}
          <a href={saved.url} download={saved.name}>
            Save {saved.name} again
          </a>
        </p>
      )}
      {preview && <Preview artifact={artifact} data={preview} label={label} />}
    </li>
  );
});

function Preview({ artifact, data, label }: { artifact: Artifact; data: Fetched; label: string }) {
  const bytes = useMemo(() => concat(data.chunks, data.size), [data]);
  const type = (artifact.mediaType || "").toLowerCase().split(";")[0]!.trim();
  const name = fileName(artifact).toLowerCase();
  const [url, setUrl] = useState<string | null>(null);
  const isImage = type.startsWith("image/");
  const isHtml = type === "text/html" || name.endsWith(".html");
  useEffect(() => {
    if (!isImage && !isHtml) return;
    const u = URL.createObjectURL(new Blob([bytes as BlobPart], { type: type || "application/octet-stream" }));
    setUrl(u);
    return () => URL.revokeObjectURL(u);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [data]);

  let body;
  if (isImage) {
    body = url ? <img src={url} alt={`Preview of ${label}`} className="preview-image" /> : null;
  } else if (isHtml) {
    // sandbox="" : no scripts, no forms, no same-origin access, no top navigation.
    body = url ? <iframe src={url} sandbox="" title={`Preview of ${label}`} className="preview-frame" /> : null;
  } else {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
    if (type === "text/csv" || name.endsWith(".csv") || type === "text/tab-separated-values") {
      const delimiter = type === "text/tab-separated-values" ? "\t" : sniffDelimiter(text);
      const { rows, truncated } = parseCsv(text, { delimiter, maxRows: 201 });
      const [head, ...rest] = rows;
      body = (
        <div className="table-wrap" tabIndex={0} role="region" aria-label={`Table preview of ${label}`}>
          <table className="csv">
            <caption className="visually-hidden">Preview of {label}</caption>
            {head && (
              <thead>
                <tr>
                  {head.map((h, i) => (
                    <th key={i} scope="col">
                      {h}
                    </th>
                  ))}
                </tr>
              </thead>
            )}
            <tbody>
              {rest.slice(0, 200).map((r, i) => (
                <tr key={i}>
                  {r.map((c, j) => (
                    <td key={j}>{c}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          {(truncated || rest.length > 200) && <p className="muted small">First 200 rows shown.</p>}
        </div>
      );
    } else if (type === "application/json" || type.endsWith("+json") || name.endsWith(".json")) {
      let pretty = text;
      try {
        pretty = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // shown as it is
      }
      body = (
        <pre className="preview-text" tabIndex={0}>
          {pretty}
        </pre>
      );
    } else if (type.startsWith("text/") || type === "application/xml" || type === "") {
      body = (
        <pre className="preview-text" tabIndex={0}>
          {text}
        </pre>
      );
    } else {
      body = <p className="empty">No preview for media type {type}.</p>;
    }
  }
  return (
    <div className="preview" role="group" aria-label={`Preview of ${label}`}>
      {body}
    </div>
  );
}
