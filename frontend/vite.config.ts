/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// The UI is served by Envoy from the same origin as the gRPC-web API and the OIDC issuer,
// under a strict CSP (script-src 'self'; style-src 'self'): the build must emit no inline
// script or style. `npm run dev` proxies API, issuer and /config.json to a running stack
// (FLNET_GATEWAY, e.g. http://127.0.0.1:8080).
const gateway = process.env.FLNET_GATEWAY ?? "http://127.0.0.1:8080";

export default defineConfig({
  build: {
    outDir: "dist",
    target: "es2022",
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    // One stylesheet (uPlot's included): nothing is injected at run time.
    cssCodeSplit: false,
    sourcemap: false,
    chunkSizeWarningLimit: 500,
  },
  server: {
    proxy: {
      "/flnet.api.control.v1.": { target: gateway, changeOrigin: false },
      "/oidc": { target: gateway, changeOrigin: false },
      "/config.json": { target: gateway, changeOrigin: false },
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
