"""What each RPC requires, read once from the contracts (proto/): the
`flnet.api.common.v1.authorization` method option, `{scopes, audience}`.

- Public (no token at all): every method of the services in `PUBLIC_SERVICES`, gRPC health
  and server reflection, so probes and grpcurl work unauthenticated.
- Declared: the caller needs a token accepted for the declared audience ("user",
  "runtime", "orchestrator") carrying every declared scope.
- Anything else (no declaration, a declaration without audience, a method of a service
  the policy was not built for): denied to everyone, PERMISSION_DENIED `METHOD_UNDECLARED`.

`admin`: a principal with the admin scope (`ADMIN_SCOPE`; configurable, None turns it off)
satisfies every scope requirement, but only of methods of the audience its token was
accepted for: audiences are checked by the validator before scopes, so an admin user
token never opens RuntimeService or SessionService. It says nothing about tenants:
tenant isolation is the services' business.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import descriptor, descriptor_pool

from flnet.api.common.v1 import options_pb2
from flnet.errors import PermissionDenied

from .errors import Reason
from .principal import Principal

log = logging.getLogger(__name__)

PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class Requirement:
    """A method's declaration: the audience its callers' tokens must be accepted for, and
    the scopes they must all carry."""

    audience: str
    scopes: frozenset[str] = frozenset()


def service_of(method: str) -> str:
    """ "/flnet.api.control.v1.RunService/GetRun" -> "flnet.api.control.v1.RunService"."""
    return method.lstrip("/").rpartition("/")[0]


def requirement_of(method: descriptor.MethodDescriptor) -> Requirement | None:
    """The authorization declaration of a method, or None when it has none (or one without
    audience, which is no usable declaration either)."""
    options = method.GetOptions()
    if not options.HasExtension(options_pb2.authorization):
        return None
    declared = options.Extensions[options_pb2.authorization]
    if not declared.audience:
        log.warning("%s declares scopes but no audience: denied", method.full_name)
        return None
    return Requirement(audience=declared.audience, scopes=frozenset(declared.scopes))


class MethodPolicy:
    """Requirements by full method path ("/package.Service/Method"); see the module
    docstring. Build it with `from_services` from the services a server registers."""

    def __init__(
        self,
        requirements: Mapping[str, Requirement | None],
        *,
        public_services: Iterable[str] = PUBLIC_SERVICES,
        admin_scope: str | None = ADMIN_SCOPE,
    ) -> None:
        self._requirements = dict(requirements)
        self.public_services = frozenset(public_services)
        self.admin_scope = admin_scope

    @classmethod
    def from_services(
        cls,
        services: Iterable[str | descriptor.ServiceDescriptor],
        *,
        pool: descriptor_pool.DescriptorPool | None = None,
        public_services: Iterable[str] = PUBLIC_SERVICES,
        admin_scope: str | None = ADMIN_SCOPE,
    ) -> MethodPolicy:
        """The policy of every method of `services` (full names, e.g. from a `_pb2`
        module's DESCRIPTOR; their modules must be imported). Public services among them
        are skipped. ValueError for a service the pool does not know."""
        pool = pool or descriptor_pool.Default()
        requirements: dict[str, Requirement | None] = {}
        public = frozenset(public_services)
        for named in services:
            if isinstance(named, str):
                if named in public:
                    continue
                try:
                    service = pool.FindServiceByName(named)
                except KeyError:
                    raise ValueError(
                        f"unknown service {named!r}: import its _pb2 module first"
                    ) from None
            else:
                service = named
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                requirements[path] = requirement_of(method)
                if requirements[path] is None:
                    log.warning("%s has no authorization declaration: denied", path)
        return cls(requirements, public_services=public, admin_scope=admin_scope)

    def is_public(self, method: str) -> bool:
        return service_of(method) in self.public_services

    def requirement(self, method: str) -> Requirement | None:
        """The declaration of `method`; None: denied to everyone."""
        return self._requirements.get(method)

    @property
    def methods(self) -> Mapping[str, Requirement | None]:
        return dict(self._requirements)

    @property
    def audiences(self) -> frozenset[str]:
        """Every audience a declared method names: a server needs a validator for each."""
        return frozenset(r.audience for r in self._requirements.values() if r is not None)

    def declared(self, method: str) -> Requirement:
        """The declaration of `method`; PermissionDenied(METHOD_UNDECLARED) when none."""
        requirement = self._requirements.get(method)
        if requirement is None:
            raise PermissionDenied(
                "method has no authorization declaration", Reason.METHOD_UNDECLARED
            )
        return requirement

    def check_scopes(self, requirement: Requirement, principal: Principal) -> None:
        """PermissionDenied(SCOPE_MISSING) unless `principal` carries every scope of
        `requirement` (or the admin scope). The error's metadata lists what is missing."""
        if self.admin_scope is not None and self.admin_scope in principal.scopes:
            return
        missing = sorted(requirement.scopes - principal.scopes)
        if missing:
            raise PermissionDenied(
                f"missing scope: {' '.join(missing)}",
                Reason.SCOPE_MISSING,
                metadata={"missing_scopes": " ".join(missing)},
            )
