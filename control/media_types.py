"""Media types as FLNet accepts them: `type/subtype[; name=value ...]`, in RFC 6838's
restricted-name characters, with RFC 9110 parameters (a token, or a quoted string) and
nothing else. A media type travels on as a Content-Type (the gateway, downloads, RO-Crate
exports), so CR, LF or any other control character in it would be a header injection."""

from __future__ import annotations

import re

# The lengths of the columns artifacts' and uploads' media types are stored in.
MEDIA_TYPE_MAX_CHARS = 255

_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 restricted-name
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"  # RFC 9110 token
_QUOTED = r'"(?:[ !#-\[\]-~]|\\[ -~])*"'  # quoted-string, printable ASCII only
_PARAMETER = rf" *; *{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_MEDIA_TYPE = re.compile(rf"{_NAME}/{_NAME}(?:{_PARAMETER})*", re.ASCII)


def media_type_problem(value: str) -> str | None:
    """Why `value` is not a media type FLNet accepts; None when it is one, or empty (the
    default, application/octet-stream, applies)."""
    if not value:
        return None
    if len(value) > MEDIA_TYPE_MAX_CHARS:
        return f"at most {MEDIA_TYPE_MAX_CHARS} characters"
    if _MEDIA_TYPE.fullmatch(value) is None:
        return (
            "not a media type 'type/subtype[; name=value]' (RFC 6838 names, no control characters)"
        )
    return None
