// Resumable chunked upload over the unary upload RPCs (browsers cannot client-stream):
// StartUpload announces the size, UploadChunk appends at the committed offset (a chunk
// already committed is accepted again unchanged, so a retry is safe), GetUpload tells where
// to resume after a failure, FinishUpload turns the bytes into an input artifact. The file's
// sha256 is computed in the same pass over the bytes the server committed and compared with
// the artifact's recorded sha256.
import { createSha256, sameDigest } from "./sha256";

export const CHUNK_SIZE = 1024 * 1024; // UploadChunk accepts at most 1 MiB.

export interface UploadSource {
  name: string;
  type: string;
  size: number;
  /** Bytes [start, end). */
  read(start: number, end: number): Promise<Uint8Array>;
}

export interface UploadState {
  name: string;
  committedSize: number;
  totalSize: number;
}

export interface UploadedArtifact {
  name: string;
  sha256: string;
  sizeBytes: number;
  filename: string;
  mediaType: string;
}

/** The four RPCs, reduced to what the algorithm needs (so it is tested without a server). */
export interface UploadApi {
  start(req: { filename: string; mediaType: string; totalSize: number }): Promise<UploadState>;
  chunk(req: { name: string; offset: number; data: Uint8Array }): Promise<UploadState>;
  get(name: string): Promise<UploadState>;
  finish(name: string): Promise<UploadedArtifact>;
}

export interface UploadProgress {
  committed: number;
  total: number;
  /** Set while a failed chunk is being retried. */
  retrying?: { attempt: number; error: unknown };
}

export interface UploadOptions {
  onProgress?: (p: UploadProgress) => void;
  signal?: AbortSignal;
  chunkSize?: number;
  /** Retries of one step before giving up (the upload can still be resumed later). */
  maxRetries?: number;
  isRetryable?: (error: unknown) => boolean;
  sleep?: (ms: number) => Promise<void>;
  /** Continue an earlier upload by its resource name instead of starting a new one. */
  resume?: string;
}

export class DigestMismatch extends Error {
  constructor(
    readonly computed: string,
    readonly recorded: string,
  ) {
    super(`sha256 mismatch: the file hashes to ${computed} but the server recorded ${recorded}`);
    this.name = "DigestMismatch";
  }
}

export class UploadFailed extends Error {
  constructor(
    readonly upload: string | undefined,
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = "UploadFailed";
  }
}

export interface UploadResult {
  artifact: UploadedArtifact;
  /** sha256 computed in the browser (equal to artifact.sha256). */
  sha256: string;
}

function aborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new DOMException("upload cancelled", "AbortError");
}

export async function uploadFile(api: UploadApi, file: UploadSource, options: UploadOptions = {}): Promise<UploadResult> {
  const chunkSize = options.chunkSize ?? CHUNK_SIZE;
  const maxRetries = options.maxRetries ?? 5;
  const isRetryable = options.isRetryable ?? (() => true);
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let uploadName: string | undefined = options.resume;

  // Retries one step; between attempts the committed size is read again.
  async function step<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      aborted(options.signal);
      try {
        return await fn();
      } catch (e) {
        if (attempt >= maxRetries || !isRetryable(e) || options.signal?.aborted) throw e;
        options.onProgress?.({ committed: hashed, total: file.size, retrying: { attempt: attempt + 1, error: e } });
        await sleep(Math.min(8000, 250 * 2 ** attempt));
      }
    }
  }

  const hash = createSha256();
  let hashed = 0; // the hash covers bytes [0, hashed), always <= committed
  // Brings the hash up to the server's committed size (after a lost response, a resume).
  async function catchUp(committed: number): Promise<void> {
    while (hashed < committed) {
      const end = Math.min(committed, hashed + chunkSize);
      hash.update(await file.read(hashed, end));
      hashed = end;
    }
  }

  try {
    let state: UploadState;
    if (uploadName) {
      state = await step(() => api.get(uploadName!));
    } else {
      state = await step(() => api.start({ filename: file.name, mediaType: file.type, totalSize: file.size }));
      uploadName = state.name;
    }
    await catchUp(state.committedSize);
    options.onProgress?.({ committed: state.committedSize, total: file.size });
    let offset = state.committedSize;
    while (offset < file.size) {
      const end = Math.min(file.size, offset + chunkSize);
      const data = await file.read(offset, end);
      const at = offset;
      state = await step(async () => {
        try {
          return await api.chunk({ name: uploadName!, offset: at, data });
        } catch (e) {
          // The chunk may have been committed before the connection broke: ask.
          const now = await api.get(uploadName!).catch(() => undefined);
          if (now && now.committedSize >= end) return now;
          throw e;
        }
      });
      if (state.committedSize < at) {
        // The server has less than we thought (it restarted mid-upload): resume from it.
        offset = state.committedSize;
        if (hashed > offset) throw new Error("upload lost committed bytes; start it again");
        continue;
      }
      if (at === hashed && state.committedSize >= end) {
        hash.update(data);
        hashed = end;
      }
      await catchUp(state.committedSize);
      offset = state.committedSize;
      options.onProgress?.({ committed: offset, total: file.size });
    }
    const artifact = await step(() => api.finish(uploadName!));
    await catchUp(file.size);
    const digest = hash.hex();
    if (!sameDigest(digest, artifact.sha256)) throw new DigestMismatch(digest, artifact.sha256);
    return { artifact, sha256: digest };
  } catch (e) {
    if (e instanceof DigestMismatch || (e instanceof DOMException && e.name === "AbortError")) throw e;
    throw new UploadFailed(uploadName, e);
  }
}

/** An UploadSource over a browser File. */
export function fileSource(file: File): UploadSource {
  return {
    name: file.name,
    type: file.type || guessMediaType(file.name),
    size: file.size,
    read: async (start, end) => new Uint8Array(await file.slice(start, end).arrayBuffer()),
  };
}

const MEDIA_TYPES: Record<string, string> = {
  csv: "text/csv",
  tsv: "text/tab-separated-values",
  txt: "text/plain",
  json: "application/json",
  html: "text/html",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  parquet: "application/vnd.apache.parquet",
  zip: "application/zip",
};

export function guessMediaType(filename: string): string {
  const ext = filename.toLowerCase().split(".").pop() ?? "";
  return MEDIA_TYPES[ext] ?? "application/octet-stream";
}
