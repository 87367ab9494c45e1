import { describe, expect, it } from "vitest";
import {
  authorizeUrl,
  base64url,
  base64urlDecode,
  codeChallenge,
  decodeJwtPayload,
  parseCallback,
  randomString,
  renewalDelay,
  safeReturnPath,
  uuid4,
} from "../auth/pkce";

describe("PKCE", () => {
  it("computes the S256 challenge of RFC 7636 appendix B", () => {
    expect(codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  });

  it("makes URL-safe random verifiers of allowed length", () => {
    const v = randomString(48);
    expect(v).toMatch(/^[A-Za-z0-9_-]{64}$/);
    expect(randomString(32)).toHaveLength(43);
    expect(randomString()).not.toBe(randomString());
  });

  it("round-trips base64url", () => {
    const bytes = new Uint8Array([0, 251, 255, 62, 63, 1]);
    expect(base64url(bytes)).toBe("APv_Pj8B");
    expect([...base64urlDecode("APv_Pj8B")]).toEqual([...bytes]);
  });

  it("builds the authorize URL with every parameter", () => {
    const url = new URL(
      authorizeUrl({
        authorizationEndpoint: "https://id.example/oidc/authorize?x=1",
        clientId: "flnet-ui",
        redirectUri: "https://ui.example/callback",
        scope: "openid runs:read",
        state: "st",
        nonce: "no",
        challenge: "ch",
      }),
    );
    expect(url.origin + url.pathname).toBe("https://id.example/oidc/authorize");
    expect(Object.fromEntries(url.searchParams)).toEqual({
      x: "1",
      response_type: "code",
      client_id: "flnet-ui",
      redirect_uri: "https://ui.example/callback",
      scope: "openid runs:read",
      state: "st",
      nonce: "no",
      code_challenge: "ch",
      code_challenge_method: "S256",
    });
  });

  it("reads the callback", () => {
    expect(parseCallback("?code=abc&state=s1")).toEqual({ kind: "code", code: "abc", state: "s1" });
    expect(parseCallback("?error=access_denied&error_description=no&state=s1")).toEqual({
      kind: "error",
      error: "access_denied",
      description: "no",
      state: "s1",
    });
    expect(parseCallback("")).toEqual({ kind: "none" });
  });

  it("decodes JWT payloads, including UTF-8, and rejects garbage", () => {
    const payload = base64url(new TextEncoder().encode(JSON.stringify({ sub: "u1", tenant: "acme", name: "Zoë", scope: "runs:read" })));
    expect(decodeJwtPayload(`h.${payload}.s`)).toEqual({ sub: "u1", tenant: "acme", name: "Zoë", scope: "runs:read" });
    expect(decodeJwtPayload("not-a-jwt")).toBeNull();
    expect(decodeJwtPayload("a.%%%.c")).toBeNull();
  });

  it("renews 60 s before expiry, or at half-life for short tokens", () => {
    expect(renewalDelay(900)).toBe(840_000);
    expect(renewalDelay(120)).toBe(60_000);
    expect(renewalDelay(60)).toBe(30_000);
    expect(renewalDelay(0)).toBe(1000);
  });

  it("only returns to same-origin paths", () => {
    expect(safeReturnPath("/runs/r-1?x=1")).toBe("/runs/r-1?x=1");
    expect(safeReturnPath("https://evil.example/")).toBe("/");
    expect(safeReturnPath("//evil.example/")).toBe("/");
    expect(safeReturnPath("/\\evil.example")).toBe("/");
    expect(safeReturnPath("/callback?code=x")).toBe("/");
    expect(safeReturnPath(null)).toBe("/");
  });

  it("makes v4 UUIDs", () => {
    expect(uuid4()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
