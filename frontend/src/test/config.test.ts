import { describe, expect, it } from "vitest";
import { DEFAULT_SCOPES, mergeConfig } from "../config";
import { lastSegment, parseToolVersion, runPath, toolPath } from "../lib/names";

describe("mergeConfig", () => {
  it("falls back to the same-origin issuer and the flnet-ui client", () => {
    expect(mergeConfig("https://ui.example", null)).toEqual({ issuer: "https://ui.example/oidc", clientId: "flnet-ui", scopes: DEFAULT_SCOPES });
  });
  it("takes what /config.json gives", () => {
    expect(mergeConfig("https://ui.example", { issuer: "https://id.example/realms/x/", clientId: "ui", scopes: " openid " })).toEqual({
      issuer: "https://id.example/realms/x",
      clientId: "ui",
      scopes: "openid",
    });
    expect(mergeConfig("https://ui.example", { issuer: 3 }).issuer).toBe("https://ui.example/oidc");
  });
});

describe("names", () => {
  it("parses and maps resource names to UI paths", () => {
    expect(lastSegment("tenants/t/runs/r-1")).toBe("r-1");
    expect(parseToolVersion("tenants/t/tools/logreg/versions/1.0.0")).toEqual({ tenant: "t", tool: "logreg", version: "1.0.0" });
    expect(runPath("tenants/t/runs/r-1")).toBe("/runs/r-1");
    expect(toolPath("tenants/t/tools/logreg/versions/1.0.0")).toBe("/tools/logreg/versions/1.0.0");
    expect(toolPath("tenants/t/tools/logreg")).toBe("/tools/logreg");
  });
});
