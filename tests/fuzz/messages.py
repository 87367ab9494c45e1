"""Random well-formed messages of any type, from its descriptor: every field set or not at
random, with extreme numbers (NaN, ±Infinity, 64-bit limits), unknown enum values,
timestamps and durations far outside their ranges, JSON structs holding NaN, and strings
that look like paths, resource names or injections (tests/fuzz/values.py)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor, message, message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor as F

from tests.fuzz import values

_INTEGERS = {
    F.TYPE_INT32: values.INT32, F.TYPE_SINT32: values.INT32, F.TYPE_SFIXED32: values.INT32,
    F.TYPE_INT64: values.INT64, F.TYPE_SINT64: values.INT64, F.TYPE_SFIXED64: values.INT64,
    F.TYPE_UINT32: values.UINT32, F.TYPE_FIXED32: values.UINT32,
    F.TYPE_UINT64: values.UINT64, F.TYPE_FIXED64: values.UINT64,
}  # fmt: skip
MAX_DEPTH = 4
#: A field's descriptor (the pure-Python class or its upb twin: mypy tells them apart).
Field = Any
# Filled as a whole: their parts only mean something together.
_ATOMIC = ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.Struct")


class Messages:
    """Makes random messages with `rng`; strings come from values.STRINGS and `names`
    (resource names that exist on the server, so that calls get past the lookups)."""

    def __init__(self, rng: random.Random, names: Sequence[str] = ()) -> None:
        self.rng = rng
        self.strings = (*values.STRINGS, *names, *names, *names)

    def of(self, message_type: descriptor.Descriptor) -> message.Message:
        msg: message.Message = message_factory.GetMessageClass(message_type)()
        self._fill(msg, 0)
        return msg

    def mutant(self, template: message.Message, changes: int = 2) -> message.Message:
        """A copy of `template` (a valid request) with `changes` fields, at any depth,
        given random values: the call gets as far as the first bad value."""
        msg = type(template)()
        msg.CopyFrom(template)
        for _ in range(changes):
            self._mutate(msg, 0)
        return msg

    def _mutate(self, msg: message.Message, depth: int) -> None:
        fields: Sequence[Field] = msg.DESCRIPTOR.fields
        if not fields or msg.DESCRIPTOR.full_name in _ATOMIC:
            self._fill(msg, depth)
            return
        field = self.rng.choice(fields)
        inner: Any = getattr(msg, field.name)
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.message_type is not None and not is_map and self.rng.random() < 0.6:
            if not field.is_repeated:
                self._mutate(inner, depth + 1)
                inner.SetInParent()
                return
            if len(inner):
                self._mutate(self.rng.choice(inner), depth + 1)
                return
        msg.ClearField(field.name)
        self._set(msg, field, depth)

    def _fill(self, msg: message.Message, depth: int) -> None:
        name = msg.DESCRIPTOR.full_name
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            msg.seconds = self.rng.choice(values.SECONDS)  # type: ignore[attr-defined]
            msg.nanos = self.rng.choice(values.NANOS)  # type: ignore[attr-defined]
            return
        if name == "google.protobuf.Struct":
            msg.CopyFrom(self._struct(depth))
            return
        oneofs = msg.DESCRIPTOR.oneofs
        chosen = {o.name: self.rng.choice(o.fields) for o in oneofs if self.rng.random() < 0.7}
        for field in msg.DESCRIPTOR.fields:
            oneof = field.containing_oneof
            if oneof is not None and chosen.get(oneof.name) is not field:
                continue
            if self.rng.random() < 0.35:
                continue
            self._set(msg, field, depth)

    def _set(self, msg: message.Message, field: Field, depth: int) -> None:
        target: Any = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            for _ in range(self.rng.randint(0, 3)):
                key = self._scalar(key_field)
                if value_field.message_type is not None:
                    if depth < MAX_DEPTH:
                        self._fill(target[key], depth + 1)
                else:
                    target[key] = self._scalar(value_field)
            return
        if field.is_repeated:
            for _ in range(self.rng.randint(0, 3)):
                if field.message_type is not None:
                    if depth < MAX_DEPTH:
                        self._fill(target.add(), depth + 1)
                else:
                    target.append(self._scalar(field))
            return
        if field.message_type is not None:
            if depth < MAX_DEPTH:
                self._fill(target, depth + 1)
                target.SetInParent()  # present even when nothing in it was set
            return
        setattr(msg, field.name, self._scalar(field))

    def _scalar(self, field: Field) -> Any:
        t = field.type
        if t in _INTEGERS:
            return self.rng.choice(_INTEGERS[t])
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            value = self.rng.choice(values.DOUBLES)
            # A float field cannot hold what is past float32's range (it would be ±inf).
            fits = t == F.TYPE_DOUBLE or math.isnan(value) or abs(value) < 3e38
            return value if fits else 0.0
        if t == F.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == F.TYPE_STRING:
            return self.rng.choice(self.strings)
        if t == F.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice((0, 1, 64, 70_000)))
        if t == F.TYPE_ENUM:
            declared = [v.number for v in field.enum_type.values]
            return self.rng.choice([*declared, *values.UNKNOWN_ENUMS])
        raise AssertionError(f"unexpected field type {t} of {field.full_name}")

    def _json(self, depth: int) -> Any:
        kind = self.rng.randrange(6 if depth < 6 else 4)
        if kind == 0:
            return self.rng.choice(values.DOUBLES)
        if kind == 1:
            return self.rng.choice(self.strings[:40])
        if kind == 2:
            return self.rng.choice((True, False))
        if kind == 3:
            return None
        if kind == 4:
            return [self._json(depth + 1) for _ in range(self.rng.randint(0, 3))]
        keys = ("rate", "epochs", "nested", "depth", "x", "")
        return {self.rng.choice(keys): self._json(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def _struct(self, depth: int) -> struct_pb2.Struct:
        s = struct_pb2.Struct()
        for _ in range(self.rng.randint(0, 4)):
            key = self.rng.choice(("rate", "epochs", "nested", "type", "properties", "x", "\x00"))
            value = self._json(depth + 1)
            s.update({key: value})
        return s
