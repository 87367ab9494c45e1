"""Where a downloaded output goes: its declared name, with the extension of its media type
when the name has none ("stats" of application/json is "stats.json"), so that the files
open in what handles their type."""

from __future__ import annotations

import mimetypes

from flnet.api.control.v1 import artifact_pb2 as ap

# The common types by hand; the rest from Python's own table (not the machine's, whose
# /etc/mime.types would make the name depend on where it was downloaded).
_EXTENSIONS = {
    "application/json": ".json",
    "application/x-ndjson": ".ndjson",
    "text/csv": ".csv",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/markdown": ".md",
    "image/png": ".png",
    "image/svg+xml": ".svg",
    "application/pdf": ".pdf",
    "application/gzip": ".gz",
    "application/zip": ".zip",
}
_PYTHON = mimetypes.MimeTypes()


def output_filename(artifact: ap.Artifact) -> str:
    name = artifact.output_name or artifact.filename or artifact.name.rsplit("/", 1)[-1]
    if "." in name:
        return name
    media_type = artifact.media_type.split(";", 1)[0].strip().lower()
    if media_type == "application/octet-stream":
        return name
    extension = _EXTENSIONS.get(media_type) or _PYTHON.guess_extension(media_type) or ""
    return name + extension
