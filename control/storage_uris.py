"""Where an artifact's bytes are kept (Artifact.storage_uri: a path on the control plane's
host, or a bucket and key) is the control plane's own business. The store records it and the
services read the bytes through it, but no response carries it: `HideStorageUris` clears it
from every response of every service, wherever an Artifact sits in it (a run's outputs, an
upload's result, a download's first message), so that a new RPC cannot leak it either.

Run events are not walked: a watch of a busy run carries thousands per response, and they
are clean already. An output event is stored without the URI (ArtifactStore), and one stored
before that was so loses it as it is read (HistoryStore)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_interceptor import AsyncServerInterceptor

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp

if TYPE_CHECKING:
    import grpc

_ARTIFACT = ap.Artifact.DESCRIPTOR
_CLEAN = rp.RunEvent.DESCRIPTOR
# Per message type (full name): the fields through which an Artifact can be reached, with
# their kinds (looked up once: a listing walks every run of its page).
_PATHS: dict[str, tuple[tuple[str, str], ...]] = {}
_MAP, _REPEATED, _SINGLE = "map", "repeated", "single"


def hide_storage_uris(message: Message) -> None:
    """Clears storage_uri in every Artifact `message` holds (itself included), but for those
    of run events, which are clean (module doc)."""
    descriptor = cast(Descriptor, message.DESCRIPTOR)  # the upb one is its runtime twin
    if descriptor is _ARTIFACT:
        message.ClearField("storage_uri")
        return
    for name, kind in _paths(descriptor):
        value = getattr(message, name)
        if kind is _MAP:
            values = value.values()
        elif kind is _REPEATED:
            values = value
        elif message.HasField(name):
            values = (value,)
        else:
            continue
        for each in values:
            hide_storage_uris(each)


class HideStorageUris(AsyncServerInterceptor):
    """Clears storage_uri from the responses of every method (any cardinality)."""

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        if inspect.isasyncgenfunction(method):
            return self._stream(method, request_or_iterator, context)
        response = await method(request_or_iterator, context)
        if isinstance(response, Message):  # None after context.write()
            hide_storage_uris(response)
        return response

    async def _stream(
        self, method: Callable[..., Any], request: Any, context: Any
    ) -> AsyncIterator[Any]:
        # Closed here, so that the handler's finally runs when the call ends (as in
        # flnet.server.intercepting).
        async with aclosing(method(request, context)) as responses:
            async for response in responses:
                hide_storage_uris(response)
                yield response


def _paths(descriptor: Descriptor) -> tuple[tuple[str, str], ...]:
    paths = _PATHS.get(descriptor.full_name)
    if paths is None:
        paths = _PATHS[descriptor.full_name] = tuple(
            (f.name, _MAP if _is_map(f) else _REPEATED if f.is_repeated else _SINGLE)
            for f in descriptor.fields
            if _reaches(_value_type(f), set())
        )
    return paths


def _reaches(descriptor: Descriptor | None, seen: set[str]) -> bool:
    """Whether an Artifact can sit in a `descriptor` message (recursive types end in
    `seen`)."""
    if descriptor is None or descriptor is _CLEAN or descriptor.full_name in seen:
        return False
    if descriptor is _ARTIFACT:
        return True
    seen.add(descriptor.full_name)
    return any(_reaches(_value_type(f), seen) for f in descriptor.fields)


def _value_type(field: FieldDescriptor) -> Descriptor | None:
    """The message type of a field's values (of a map's values), None for scalars."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return _value_type(message.fields_by_name["value"])
    return message


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry
