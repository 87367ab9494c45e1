"""Server plumbing every FLNet gRPC server shares (control plane, orchestrator): the server
skeleton with health, reflection and a graceful stop (`serving`), the mapping of domain errors
to gRPC statuses (`interceptors`, on the base of `intercepting`), and identity: token
validation, scopes declared in the contracts, tenants and the audit log (`auth`). Platform
only: the runtime never imports it."""
