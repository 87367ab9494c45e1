"""`ErrorInfo.reason` values of the control plane's errors (documented in the contract:
ControlErrorReason)."""

from __future__ import annotations

from flnet.api.control.v1 import errors_pb2
from flnet.reasons import Reasons

Reason = Reasons(errors_pb2.ControlErrorReason.DESCRIPTOR)
