import { describe, expect, it } from "vitest";
import { downloadChunks } from "../lib/download";
import { sha256Hex } from "../lib/sha256";
import { DigestMismatch, UploadFailed, uploadFile, type UploadApi, type UploadSource } from "../lib/upload";

function bytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) % 251;
  return b;
}

function source(data: Uint8Array): UploadSource {
  return { name: "data.csv", type: "text/csv", size: data.length, read: async (s, e) => data.slice(s, e) };
}

/** An in-memory upload server following artifact_service.proto's rules. */
function server(opts: { failChunkCalls?: number[]; loseResponseCalls?: number[]; corrupt?: boolean } = {}) {
  let stored = new Uint8Array(0);
  let total = 0;
  let chunkCalls = 0;
  const log: string[] = [];
  const api: UploadApi = {
    start: async (r) => {
      total = r.totalSize;
      log.push(`start ${r.totalSize}`);
      return { name: "tenants/t/uploads/u1", committedSize: 0, totalSize: total };
    },
    chunk: async (r) => {
      chunkCalls++;
      log.push(`chunk ${r.offset}`);
      if (opts.failChunkCalls?.includes(chunkCalls)) throw new Error("unavailable");
      if (r.offset > stored.length) throw new Error("FAILED_PRECONDITION");
      const end = r.offset + r.data.length;
      if (end > stored.length) {
        const next = new Uint8Array(end);
        next.set(stored);
        next.set(r.data, r.offset);
        stored = next;
      }
      if (opts.loseResponseCalls?.includes(chunkCalls)) throw new Error("connection reset");
      return { name: r.name, committedSize: stored.length, totalSize: total };
    },
    get: async (name) => {
      log.push("get");
      return { name, committedSize: stored.length, totalSize: total };
    },
    finish: async () => {
      log.push("finish");
      const digest = opts.corrupt ? "0".repeat(64) : sha256Hex(stored);
      return { name: "tenants/t/artifacts/a1", sha256: digest, sizeBytes: stored.length, filename: "data.csv", mediaType: "text/csv" };
    },
  };
  return { api, log, stored: () => stored };
}

const fast = { sleep: async () => undefined };

describe("uploadFile", () => {
  it("uploads in chunks and checks the sha256", async () => {
    const data = bytes(2500);
    const s = server();
    const progress: number[] = [];
    const r = await uploadFile(s.api, source(data), { chunkSize: 1000, onProgress: (p) => progress.push(p.committed), ...fast });
    expect(r.sha256).toBe(sha256Hex(data));
    expect(r.artifact.name).toBe("tenants/t/artifacts/a1");
    expect(s.log).toEqual(["start 2500", "chunk 0", "chunk 1000", "chunk 2000", "finish"]);
    expect(progress).toEqual([0, 1000, 2000, 2500]);
  });

  it("retries a failed chunk and resumes from the committed size after a lost response", async () => {
    const data = bytes(3000);
    const s = server({ failChunkCalls: [2], loseResponseCalls: [3] });
    const r = await uploadFile(s.api, source(data), { chunkSize: 1000, ...fast });
    expect(r.sha256).toBe(sha256Hex(data));
    expect([...s.stored()]).toEqual([...data]);
    // call 2 failed (retried), call 3 committed but its response was lost: GetUpload says so.
    expect(s.log).toEqual(["start 3000", "chunk 0", "chunk 1000", "get", "chunk 1000", "get", "chunk 2000", "finish"]);
  });

  it("resumes an earlier upload by name", async () => {
    const data = bytes(2000);
    const s = server({ failChunkCalls: [2, 3, 4] });
    const first = await uploadFile(s.api, source(data), { chunkSize: 1000, maxRetries: 2, ...fast }).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(UploadFailed);
    expect((first as UploadFailed).upload).toBe("tenants/t/uploads/u1");
    const r = await uploadFile(s.api, source(data), { chunkSize: 1000, resume: "tenants/t/uploads/u1", ...fast });
    expect(r.sha256).toBe(sha256Hex(data));
  });

  it("reports a digest mismatch", async () => {
    const s = server({ corrupt: true });
    await expect(uploadFile(s.api, source(bytes(10)), fast)).rejects.toBeInstanceOf(DigestMismatch);
  });

  it("uploads an empty file", async () => {
    const s = server();
    const r = await uploadFile(s.api, source(new Uint8Array(0)), fast);
    expect(r.sha256).toBe(sha256Hex(new Uint8Array(0)));
    expect(s.log).toEqual(["start 0", "finish"]);
  });
});

describe("downloadChunks", () => {
  it("resumes a broken stream at the byte offset and trims overlap", async () => {
    const data = bytes(5000);
    const offsets: number[] = [];
    let call = 0;
    const r = await downloadChunks({
      signal: new AbortController().signal,
      isRetryable: () => true,
      sleep: async () => undefined,
      open: async function* (offset) {
        offsets.push(offset);
        call++;
        // The second stream starts 500 bytes early (overlap must be dropped).
        let at = call === 2 ? offset - 500 : offset;
        let sent = 0;
        while (at < data.length) {
          if (call === 1 && sent === 2) throw new Error("broken");
          yield { offset: at, data: data.slice(at, at + 1000) };
          at += 1000;
          sent++;
        }
      },
    });
    expect(offsets).toEqual([0, 2000]);
    expect(r.size).toBe(5000);
    expect(r.sha256).toBe(sha256Hex(data));
  });

  it("refuses a stream that skips bytes", async () => {
    await expect(
      downloadChunks({
        signal: new AbortController().signal,
        open: async function* () {
          yield { offset: 0, data: bytes(10) };
          yield { offset: 20, data: bytes(10) };
        },
      }),
    ).rejects.toThrow(/skipped/);
  });
});
