// One declared input of a tool version: upload a file (resumable chunked upload with a
// progress bar and the sha256 checked against the stored artifact's) or pick an existing
// input artifact.
import { useEffect, useRef, useState } from "react";
import { api } from "../api/client";
import { isRetryable, toProblem } from "../api/errors";
import type { IoSpec } from "../gen/flnet/api/common/v1/io_pb";
import { ArtifactDirection, type Artifact } from "../gen/flnet/api/control/v1/artifact_pb";
import { formatBytes, formatTime, shortDigest } from "../lib/format";
import { DigestMismatch, UploadFailed, fileSource, uploadFile, type UploadApi, type UploadedArtifact } from "../lib/upload";
import { ProgressBar } from "./common";

export type InputChoice =
  | { mode: "upload"; artifact?: UploadedArtifact; busy: boolean }
  | { mode: "existing"; artifact?: string };

/** The two ways to give an input, as the radio buttons offer them. */
const MODES: { mode: InputChoice["mode"]; label: string }[] = [
  { mode: "upload", label: "Upload a file" },
  { mode: "existing", label: "Use an existing artifact" },
];

const EXTENSIONS: Record<string, string> = {
  "text/csv": ".csv",
  "text/plain": ".txt",
  "text/tab-separated-values": ".tsv",
  "application/json": ".json",
  "text/html": ".html",
  "image/png": ".png",
};

/** A hint for the file chooser (the declared media type and its usual extension). */
function acceptOf(mediaType: string): string | undefined {
  if (!mediaType || mediaType === "application/octet-stream") return undefined;
  const ext = EXTENSIONS[mediaType];
  return ext ? `${mediaType},${ext}` : mediaType;
}

export function chosenArtifact(c: InputChoice | undefined): string | undefined {
  if (!c) return undefined;
  return c.mode === "upload" ? c.artifact?.name : c.artifact || undefined;
}

/** The upload RPCs in the shape the upload algorithm expects. */
export function uploadApi(): UploadApi {
  const a = api().artifacts;
  const state = (u: { name: string; committedSize: bigint; totalSize: bigint } | undefined) => {
    if (!u) throw new Error("empty upload response");
    return { name: u.name, committedSize: Number(u.committedSize), totalSize: Number(u.totalSize) };
  };
  return {
    start: async (r) =>
      state((await a.startUpload({ parent: api().parent(), filename: r.filename, mediaType: r.mediaType, totalSize: BigInt(r.totalSize) })).upload),
    chunk: async (r) => state((await a.uploadChunk({ name: r.name, offset: BigInt(r.offset), data: r.data })).upload),
    get: async (name) => state((await a.getUpload({ name })).upload),
    finish: async (name) => {
      const art = (await a.finishUpload({ name })).artifact;
      if (!art) throw new Error("empty FinishUpload response");
      return { name: art.name, sha256: art.sha256, sizeBytes: Number(art.sizeBytes), filename: art.filename, mediaType: art.mediaType };
    },
  };
}

interface Props {
  spec: IoSpec;
  choice: InputChoice | undefined;
  onChange: (c: InputChoice) => void;
  artifacts: Artifact[] | undefined;
  error: string | undefined;
  idPrefix: string;
}

type UploadStatus =
  | { kind: "idle" }
  | { kind: "uploading"; committed: number; total: number; retrying?: string }
  | { kind: "done"; artifact: UploadedArtifact; filename: string }
  | { kind: "failed"; message: string; resume?: string; file: File }
  | { kind: "mismatch"; computed: string; recorded: string };

export function InputPicker({ spec, choice, onChange, artifacts, error, idPrefix }: Props) {
  const id = `${idPrefix}-${spec.name}`;
  const mode = choice?.mode ?? "upload";
  const [status, setStatus] = useState<UploadStatus>({ kind: "idle" });
  const ctl = useRef<AbortController | null>(null);
  useEffect(() => () => ctl.current?.abort(), []);

  const start = async (file: File, resume?: string) => {
    ctl.current?.abort();
    const c = new AbortController();
    ctl.current = c;
    onChange({ mode: "upload", busy: true });
    setStatus({ kind: "uploading", committed: 0, total: file.size });
    try {
      const source = fileSource(file);
      if (spec.mediaType && !file.type) source.type = spec.mediaType;
      const result = await uploadFile(uploadApi(), source, {
        signal: c.signal,
        isRetryable,
        ...(resume ? { resume } : {}),
        onProgress: (p) =>
          setStatus({
            kind: "uploading",
            committed: p.committed,
            total: p.total,
            ...(p.retrying ? { retrying: `retrying after an error (attempt ${p.retrying.attempt})` } : {}),
          }),
      });
      setStatus({ kind: "done", artifact: result.artifact, filename: file.name });
      onChange({ mode: "upload", busy: false, artifact: result.artifact });
    } catch (e) {
      if (c.signal.aborted) return;
      onChange({ mode: "upload", busy: false });
      if (e instanceof DigestMismatch) setStatus({ kind: "mismatch", computed: e.computed, recorded: e.recorded });
      else if (e instanceof UploadFailed) {
        const s: UploadStatus = { kind: "failed", message: toProblem(e.cause).message, file };
        if (e.upload) s.resume = e.upload;
        setStatus(s);
      } else setStatus({ kind: "failed", message: toProblem(e).message, file });
    }
  };

  // Back to uploading keeps a file already uploaded.
  const chooseMode = (m: InputChoice["mode"]) =>
    onChange(
      m === "existing"
        ? { mode: "existing" }
        : status.kind === "done"
          ? { mode: "upload", busy: false, artifact: status.artifact }
          : { mode: "upload", busy: false },
    );
  const candidates = (artifacts ?? []).filter((a) => a.direction === ArtifactDirection.INPUT);
  const describedBy = [`${id}-help`, error ? `${id}-error` : ""].filter(Boolean).join(" ");
  return (
    <fieldset className={`input-spec${error ? " invalid" : ""}`} aria-describedby={describedBy}>
      <legend>
        {spec.name}
        <span className="legend-note">
          {" "}
          ({spec.mediaType || "any type"}, {spec.required ? "required" : "optional"})
        </span>
      </legend>
      <p className="help" id={`${id}-help`}>
        {spec.description}
        {spec.maxSizeBytes ? <span className="constraints">at most {formatBytes(spec.maxSizeBytes)}</span> : null}
      </p>
      <div className="radio-row" role="radiogroup" aria-label={`Source of ${spec.name}`}>
        {MODES.map((m) => (
          <div className="radio" key={m.mode}>
            <input type="radio" id={`${id}-mode-${m.mode}`} name={`${id}-mode`} checked={mode === m.mode} onChange={() => chooseMode(m.mode)} />
            <label htmlFor={`${id}-mode-${m.mode}`}>{m.label}</label>
          </div>
        ))}
      </div>
      {mode === "upload" ? (
        <div className="field">
          <label htmlFor={`${id}-file`}>File for {spec.name}</label>
          <input
            id={`${id}-file`}
            type="file"
            accept={acceptOf(spec.mediaType)}
            onChange={(e) => {
              const f = e.target.files?.[0];
              if (f) void start(f);
            }}
          />
          {status.kind === "uploading" && (
            <ProgressBar
              value={status.total ? status.committed / status.total : 0}
              label={`Upload progress of ${spec.name}`}
              text={`${formatBytes(status.committed)} of ${formatBytes(status.total)}${status.retrying ? ` — ${status.retrying}` : ""}`}
            />
          )}
          <div role="status" className="upload-status">
            {status.kind === "done" && (
              <span className="ok">
                Uploaded {status.filename} ({formatBytes(status.artifact.sizeBytes)}) · sha256 verified
              </span>
            )}
          </div>
          {status.kind === "failed" && (
            <div role="alert" className="problem">
              <p className="problem-title">
                Upload of {status.file.name} failed: {status.message}
              </p>
              <button type="button" onClick={() => void start(status.file, status.resume)}>
                {status.resume ? "Resume upload" : "Retry upload"}
              </button>
            </div>
          )}
          {status.kind === "mismatch" && (
            <div role="alert" className="problem">
              <p className="problem-title">sha256 mismatch: the server stored different bytes than this file. Upload it again.</p>
              <p className="small">
                File <code className="digest">{status.computed}</code>, server <code className="digest">{status.recorded}</code>
              </p>
            </div>
          )}
        </div>
      ) : (
        <div className="field">
          <label htmlFor={`${id}-artifact`}>Existing artifact for {spec.name}</label>
          <select
            id={`${id}-artifact`}
            value={choice?.mode === "existing" ? (choice.artifact ?? "") : ""}
            onChange={(e) => onChange({ mode: "existing", artifact: e.target.value })}
          >
            <option value="">{artifacts === undefined ? "Loading artifacts…" : candidates.length ? "Choose an artifact" : "No input artifacts yet"}</option>
            {candidates.map((a) => (
              <option key={a.name} value={a.name}>
                {a.filename || a.name.split("/").pop()} · {formatBytes(a.sizeBytes)} · {a.mediaType} · {shortDigest(a.sha256)} · {formatTime(a.createTime)}
              </option>
            ))}
          </select>
        </div>
      )}
      {error && (
        <p id={`${id}-error`} className="field-error">
          {error}
        </p>
      )}
    </fieldset>
  );
}
