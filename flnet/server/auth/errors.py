"""Reasons (`ErrorInfo.reason`) of the errors authentication and authorization raise.

The errors themselves are the shared ones of flnet.errors: `Unauthenticated` (no credential,
or one that is not valid: the caller should obtain a new token), `PermissionDenied` (a valid
credential that may not call this method) and `Unavailable` (the identity provider cannot be
reached: retry later). flnet.server.interceptors.ErrorMapper turns them into statuses. Their
messages are fixed texts: never the token, never a library's exception text.
"""

from __future__ import annotations

from flnet.api.common.v1 import errors_pb2
from flnet.reasons import Reasons

#: Why a call was refused (documented in the contract: AuthErrorReason).
Reason = Reasons(errors_pb2.AuthErrorReason.DESCRIPTOR)
