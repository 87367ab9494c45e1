"""Who is calling, and what they may see.

Every RPC runs with the Principal the authorization interceptor authenticated
(flnet.server.auth). A user sees its own tenant only: a resource of another tenant does not exist
for it (NOT_FOUND, the same answer as for a resource that does not exist at all, so that
names of other tenants leak nothing). The check sits where every resource name of a request
is parsed (control.names), so no handler can forget it.

Run credentials (audience "runtime") carry no tenant: RuntimeService checks that a
credential speaks for the run it names. Code outside any RPC (supervision, the orchestrator
watch) has no principal and sees everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from flnet.errors import NotFound
from flnet.server.auth import USER, current_principal, require_principal


@dataclass(frozen=True)
class Caller:
    """What provenance records of whoever made a change."""

    subject: str
    tenant: str
    client_id: str


def caller() -> Caller:
    """The caller of the RPC being handled."""
    p = require_principal()
    return Caller(subject=p.subject, tenant=p.tenant or "", client_id=p.client_id or "")


def check_visible(tenant: str, kind: str, name: str) -> None:
    """NotFound ("{kind} {name} does not exist") when the current user may not see
    resources of `tenant`."""
    p = current_principal()
    if p is not None and p.audience == USER and p.tenant != tenant:
        raise NotFound(f"{kind} {name} does not exist")
