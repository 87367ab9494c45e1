// A real OpenID Provider for interoperability tests: panva's certified `oidc-provider`
// (node_modules, see package.json), issuing client_credentials JWT access tokens.
//
// Usage: node oidc_provider.mjs CONFIG.json   (written by tests/interop/oidc_provider.py)
//
// CONFIG: {
//   "port": 0 (any free one) or a port (a restart after key rotation),
//   "jwks": {"keys": [private JWKs]}, the first key of `alg` signs,
//   "alg": "RS256" | "ES256",
//   "token_ttl": seconds,
//   "resources": {"<resource indicator URI>": "<aud value>"},
//   "clients": [{"client_id", "client_secret", "tenant", "scope", "roles", "audience"}]
// }
// Prints one line `{"port": N, "issuer": "http://127.0.0.1:N"}` once it listens; exits
// when its stdin closes (the test process is gone) or on SIGTERM.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const resourceOf = Object.fromEntries(
  Object.entries(config.resources).map(([resource, audience]) => [audience, resource]),
);

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: client.scope,
    tenant: client.tenant,
    roles: client.roles,
    audience: client.audience,
  })),
  clientDefaults: { id_token_signed_response_alg: config.alg },
  extraClientMetadata: { properties: ['tenant', 'roles', 'audience'] },
  // Listing the scopes makes oidc-provider refuse those outside a client's `scope`.
  scopes: ['openid', ...new Set(config.clients.flatMap((client) => client.scope.split(' ')))],
  jwks: config.jwks,
  cookies: { keys: ['interop-tests-only'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A request without `resource`: the client's own audience.
      defaultResource: async (ctx, client, oneOf) => oneOf ?? resourceOf[client.audience],
      // Resource indicators must be absolute URIs; the `aud` is the plain string mapped to.
      getResourceServerInfo: async (ctx, resource, client) => {
        const audience = config.resources[resource];
        if (audience === undefined) throw new errors.InvalidTarget();
        return {
          scope: client.scope,
          audience,
          accessTokenTTL: config.token_ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: config.alg } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const client = ctx.oidc.client ?? (await provider.Client.find(token.clientId));
    if (!client) return undefined;
    return { tenant: client.tenant, ...(client.roles?.length ? { roles: client.roles } : {}) };
  },
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ port, issuer })}\n`);

const exit = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.stdin.on('end', exit).resume();
process.on('SIGTERM', exit);
