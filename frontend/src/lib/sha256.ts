// Incremental sha256 (pure JS: works in insecure contexts too, where crypto.subtle is absent,
// and over streamed chunks, which crypto.subtle cannot do).
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";

export interface IncrementalHash {
  update(data: Uint8Array): IncrementalHash;
  /** Lower-case hex digest; the hash cannot be updated afterwards. */
  hex(): string;
}

export function createSha256(): IncrementalHash {
  const h = sha256.create();
  const api: IncrementalHash = {
    update(data) {
      h.update(data);
      return api;
    },
    hex() {
      return bytesToHex(h.digest());
    },
  };
  return api;
}

export function sha256Hex(data: Uint8Array): string {
  return bytesToHex(sha256(data));
}

/** Compares a computed digest with a recorded one ("sha256:" prefix and case ignored). */
export function sameDigest(computed: string, recorded: string): boolean {
  const norm = (s: string) => s.trim().toLowerCase().replace(/^sha256:/, "");
  return norm(computed) !== "" && norm(computed) === norm(recorded);
}
