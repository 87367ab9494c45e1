"""The artifact store: blobs streamed in chunks (never a whole file in memory), verified by
sha256, visible only once complete. Which store is configuration only
(FLNET_ARTIFACT_URL): `file://<dir>` (LocalBlobStore, the default under the data
directory) or `s3://bucket/prefix` (S3BlobStore; FLNET_S3_ENDPOINT for S3-compatible
servers, the usual AWS_* variables for credentials and region)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from flnet.control.blobs.local import LocalBlobStore
from flnet.control.blobs.protocol import Blob, BlobMissing, BlobStore, BlobWriter, verify
from flnet.control.blobs.s3 import PART_BYTES, PARTS_IN_FLIGHT, S3BlobStore

__all__ = [
    "Blob",
    "BlobMissing",
    "BlobStore",
    "BlobWriter",
    "LocalBlobStore",
    "S3BlobStore",
    "open_blob_store",
    "open_s3_blob_store",
    "verify",
]


async def open_blob_store(url: str, *, s3_endpoint: str = "", s3_region: str = "") -> BlobStore:
    """The store `url` names; ValueError (naming FLNET_ARTIFACT_URL) when it names none or
    an S3 bucket cannot be reached."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return LocalBlobStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc:
        return await open_s3_blob_store(
            parts.netloc, parts.path, endpoint=s3_endpoint, region=s3_region
        )
    raise ValueError(
        f"FLNET_ARTIFACT_URL: {url!r} is neither file:///<directory> nor s3://<bucket>/<prefix>"
    )


async def open_s3_blob_store(
    bucket: str,
    prefix: str = "",
    *,
    endpoint: str = "",
    region: str = "",
    part_bytes: int = PART_BYTES,
    parts_in_flight: int = PARTS_IN_FLIGHT,
) -> S3BlobStore:
    """An S3 store on an existing bucket. Credentials come from the AWS chain
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles)."""
    config = AioConfig(
        # S3-compatible servers (SeaweedFS, MinIO) want bucket names in the path.
        s3={"addressing_style": "path" if endpoint else "auto"},
        max_pool_connections=64,
        retries={"mode": "standard", "max_attempts": 4},
        # No extra CRC32s: every request body is signed with its sha256 (SigV4 payload
        # signing), and every blob's own sha256 is checked on the way in and out.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = aioboto3.Session(region_name=region or None)
    stack = contextlib.AsyncExitStack()
    try:
        client = await stack.enter_async_context(
            session.client("s3", endpoint_url=endpoint or None, config=config)
        )
        await client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as e:
        await stack.aclose()
        where = f" at {endpoint}" if endpoint else ""
        raise ValueError(f"FLNET_ARTIFACT_URL: bucket {bucket!r}{where} is not usable: {e}") from e
    return S3BlobStore(
        client,
        bucket,
        prefix,
        part_bytes=part_bytes,
        parts_in_flight=parts_in_flight,
        stack=stack,
    )
