// Pure helpers of the OIDC authorization code flow with PKCE (RFC 7636, S256): random
// values, the challenge, the authorize URL, the callback's parameters, JWT payload decoding
// (display only: the servers verify tokens) and the renewal schedule.
import { sha256 } from "@noble/hashes/sha2.js";

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function base64urlDecode(text: string): Uint8Array {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const bin = atob(padded);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** A random URL-safe string of `bytes` random bytes (32 bytes → 43 characters, within the
 * 43–128 characters RFC 7636 allows for a verifier). */
export function randomString(bytes = 32): string {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return base64url(b);
}

/** The S256 code challenge of a verifier: BASE64URL(SHA256(ASCII(verifier))). */
export function codeChallenge(verifier: string): string {
  return base64url(sha256(new TextEncoder().encode(verifier)));
}

/** A random UUID v4 (crypto.randomUUID needs a secure context; this does not). */
export function uuid4(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export interface AuthorizeParams {
  authorizationEndpoint: string;
  clientId: string;
  redirectUri: string;
  scope: string;
  state: string;
  nonce: string;
  challenge: string;
}

export function authorizeUrl(p: AuthorizeParams): string {
  const url = new URL(p.authorizationEndpoint);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("client_id", p.clientId);
  url.searchParams.set("redirect_uri", p.redirectUri);
  url.searchParams.set("scope", p.scope);
  url.searchParams.set("state", p.state);
  url.searchParams.set("nonce", p.nonce);
  url.searchParams.set("code_challenge", p.challenge);
  url.searchParams.set("code_challenge_method", "S256");
  return url.toString();
}

export type CallbackParams =
  | { kind: "code"; code: string; state: string }
  | { kind: "error"; error: string; description: string; state: string }
  | { kind: "none" };

/** Reads the authorization response from the callback URL's query. */
export function parseCallback(search: string): CallbackParams {
  const q = new URLSearchParams(search);
  const state = q.get("state") ?? "";
  const error = q.get("error");
  if (error) return { kind: "error", error, description: q.get("error_description") ?? "", state };
  const code = q.get("code");
  if (code) return { kind: "code", code, state };
  return { kind: "none" };
}

/** Decodes a JWT's payload without verifying it (for display: the servers verify). */
export function decodeJwtPayload(token: string): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = new TextDecoder().decode(base64urlDecode(parts[1]!));
    const v: unknown = JSON.parse(json);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Milliseconds until a token valid for `expiresIn` seconds should be renewed: 60 s before
 * it expires, or at half its life when it lives two minutes or less; at least one second. */
export function renewalDelay(expiresIn: number): number {
  const seconds = expiresIn > 120 ? expiresIn - 60 : expiresIn / 2;
  return Math.max(1000, Math.round(seconds * 1000));
}

/** Only same-origin paths are followed after sign-in (never an absolute URL: open redirect). */
export function safeReturnPath(path: string | null | undefined): string {
  if (!path || !path.startsWith("/") || path.startsWith("//") || path.startsWith("/\\")) return "/";
  if (path.startsWith("/callback")) return "/";
  return path;
}
