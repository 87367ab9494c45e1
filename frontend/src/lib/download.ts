// Downloads through a server stream of chunks (DownloadArtifact, ExportRun): the bytes are
// kept in order, a broken stream resumes from the byte offset received so far (chunks that
// overlap what is already there are trimmed), and the sha256 is computed incrementally over
// exactly the bytes kept.
import { createSha256, sameDigest } from "./sha256";

export interface Chunk {
  /** Offset of data in the file (undefined: right after the previous chunk). */
  offset?: number;
  data: Uint8Array;
}

export interface DownloadOptions {
  /** Opens the stream at a byte offset. */
  open: (offset: number, signal: AbortSignal) => AsyncIterable<Chunk>;
  signal: AbortSignal;
  onProgress?: (received: number) => void;
  isRetryable?: (e: unknown) => boolean;
  maxRetries?: number;
  sleep?: (ms: number) => Promise<void>;
}

export interface Downloaded {
  chunks: Uint8Array[];
  size: number;
  sha256: string;
}

export async function downloadChunks(opts: DownloadOptions): Promise<Downloaded> {
  const chunks: Uint8Array[] = [];
  const hash = createSha256();
  let received = 0;
  const maxRetries = opts.maxRetries ?? 5;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  for (let attempt = 0; ; ) {
    try {
      for await (const c of opts.open(received, opts.signal)) {
        const at = c.offset ?? received;
        if (at > received) throw new Error(`the stream skipped bytes ${received}–${at}`);
        const skip = received - at;
        if (skip >= c.data.length) continue; // already have all of it
        const data = skip > 0 ? c.data.subarray(skip) : c.data;
        chunks.push(data);
        hash.update(data);
        received += data.length;
        attempt = 0;
        opts.onProgress?.(received);
      }
      return { chunks, size: received, sha256: hash.hex() };
    } catch (e) {
      attempt += 1;
      if (opts.signal.aborted || attempt > maxRetries || !(opts.isRetryable?.(e) ?? false)) throw e;
      await sleep(Math.min(8000, 250 * 2 ** attempt));
    }
  }
}

export function verify(computed: string, recorded: string): { ok: boolean; computed: string; recorded: string } {
  return { ok: sameDigest(computed, recorded), computed, recorded };
}

/** Saves bytes as a file through an object URL and a temporary <a download>; returns the URL
 * (revoke it when done). */
export function saveBytes(chunks: BlobPart[], filename: string, mediaType: string): string {
  const url = URL.createObjectURL(new Blob(chunks, { type: mediaType || "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.rel = "noopener";
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
  return url;
}

export function concat(chunks: Uint8Array[], size?: number): Uint8Array {
  const total = size ?? chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}
