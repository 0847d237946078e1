"""S3 sink: archives the event JSON and, optionally, mirrors the outputs it points to.

Docs: https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html, the multipart
upload API (…/API_CreateMultipartUpload.html, UploadPart, CompleteMultipartUpload,
AbortMultipartUpload), the error codes at …/API/ErrorResponses.html, and aiobotocore
(https://aiobotocore.readthedocs.io). Works with any S3 API (R2, MinIO, moto) via
`endpoint_url`; credentials come from the standard AWS chain (environment, shared files, IMDS).

Keys are deterministic, so a retry or replay overwrites instead of duplicating:

* `{prefix}events/{yyyy}/{mm}/{dd}/{event_id}.json` — the event (date: `received_at`, UTC);
* `{prefix}outputs/{source}/{job_id}/{n}.{ext}` — output n (0-based) when `mirror_outputs`.

Outputs are fetched with handlers.sinks.fetch (http(s) only, public addresses unless
`allow_private_networks`, `max_output_bytes` cap, the sink's timeout) and streamed: a body
that fits one 8 MiB part is a single PutObject, a larger one a multipart upload that is
aborted on any failure, so no partial object is left. The event JSON is written last, with
`mirrored_outputs: [keys]` added, so its presence means the mirror is complete.

S3 errors: AccessDenied, NoSuchBucket, InvalidAccessKeyId, SignatureDoesNotMatch (and other
4xx) are permanent; throttling, 5xx and network failures are transient. botocore's own retries
are off: the delivery engine owns retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import posixpath
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from handlers.sinks import fetch
from handlers.sinks.base import RETRYABLE_4XX, SinkContext, SinkError
from receiver.core.errors import ConfigError

try:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore import exceptions as boto_errors
except ImportError:  # the s3 extra is optional; create() says how to install it
    get_session = None


PART_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 50 * 1024 * 1024
DEFAULT_REGION = "us-east-1"
MISSING_EXTRA = "the s3 sink needs the s3 extra: pip install 'hookyard[s3]'"

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidObjectState",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
T = TypeVar("T")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXT_SAFE = re.compile(r"^[a-z0-9]{1,8}$")


# -- keys ------------------------------------------------------------------------------------


def event_key(prefix: str, event: Mapping[str, Any]) -> str:
    day = received_day(event.get("received_at"))
    return f"{prefix}events/{day:%Y/%m/%d}/{key_safe(str(event['id']))}.json"


def received_day(value: Any) -> datetime:
    """`received_at` as a UTC datetime (a naive time is taken as UTC)."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise SinkError(
            f"event received_at {str(value)[:40]!r} is not an ISO time", permanent=True
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def output_key(prefix: str, event: Mapping[str, Any], index: int, ext: str) -> str:
    source = key_safe(str(event.get("source") or "unknown"))
    job = key_safe(str(event.get("job_id") or event["id"]))
    return f"{prefix}outputs/{source}/{job}/{index}.{ext}"


def key_safe(value: str) -> str:
    """One key segment: [A-Za-z0-9._-] only; a hash suffix keeps changed ids distinct."""
    safe = _KEY_UNSAFE.sub("_", value)[:128].strip(".") or "_"
    if safe == value:
        return safe
    return f"{safe}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"


def extension(content_type: str | None, url: str) -> str:
    """From the content type, else the URL path's suffix, else `bin`."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in EXTENSIONS:
        return EXTENSIONS[media]
    suffix = posixpath.splitext(urllib.parse.urlsplit(url).path)[1].lower().lstrip(".")
    suffix = "jpg" if suffix == "jpeg" else suffix
    return suffix if _EXT_SAFE.match(suffix) else "bin"


def event_body(event: Mapping[str, Any], mirrored: list[str] | None) -> bytes:
    document = dict(event)
    if mirrored is not None:
        document["mirrored_outputs"] = mirrored
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


# -- errors ----------------------------------------------------------------------------------


def s3_error(exc: Exception, what: str) -> SinkError:
    """A botocore failure as a SinkError, permanent when a retry cannot help."""
    if isinstance(exc, boto_errors.ClientError):
        return client_error(exc, what)
    permanent = isinstance(
        exc,
        boto_errors.NoCredentialsError
        | boto_errors.PartialCredentialsError
        | boto_errors.ParamValidationError,
    )
    return SinkError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}", permanent=permanent)


def client_error(exc: Any, what: str) -> SinkError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in PERMANENT_CODES:
        permanent = True
    elif code in TRANSIENT_CODES or not isinstance(status, int):
        permanent = False
    else:
        permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
    message = f"{what}: {code or 'error'}" + (f" ({status})" if status else "")
    detail = str(error.get("Message", ""))[:200]
    return SinkError(
        message + (f": {detail}" if detail else ""),
        status_code=status if isinstance(status, int) else None,
        permanent=permanent,
    )


# -- the sink --------------------------------------------------------------------------------


class S3Sink:
    def __init__(
        self,
        bucket: str,
        ctx: SinkContext,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        mirror_outputs: bool = False,
        allow_private_networks: bool = False,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        self.bucket = bucket
        self.ctx = ctx
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.mirror_outputs = mirror_outputs
        self.allow_private_networks = allow_private_networks
        self.max_output_bytes = max_output_bytes
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def send(self, event: Mapping[str, Any]) -> int | None:
        key = event_key(self.prefix, event)  # a bad received_at fails before any upload
        mirrored = await self.mirror(event) if self.mirror_outputs else None
        body = event_body(event, mirrored)
        answer = await self.call("put_object", key, Body=body, ContentType="application/json")
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def client(self) -> Any:
        """The S3 client, created on first use and kept until aclose()."""
        async with self._lock:
            if self._client is None:
                config = AioConfig(
                    connect_timeout=self.ctx.timeout_s,
                    read_timeout=self.ctx.timeout_s,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                )
                creator = get_session().create_client(
                    "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
                self._client = await self._stack.enter_async_context(creator)
            return self._client

    async def call(self, operation: str, key: str, **params: Any) -> Any:
        """One S3 operation on `key` in our bucket, its failures classified."""
        try:
            client = await self.client()
            return await getattr(client, operation)(Bucket=self.bucket, Key=key, **params)
        except ValueError as exc:  # botocore's word for a malformed endpoint_url or region
            raise SinkError(f"cannot build the S3 client: {exc}"[:300], permanent=True) from None
        except (boto_errors.BotoCoreError, boto_errors.ClientError) as exc:
            raise s3_error(exc, f"S3 {operation} s3://{self.bucket}/{key}") from None
        except OSError as exc:  # TimeoutError included
            raise SinkError(
                f"S3 {operation} s3://{self.bucket}/{key}: {type(exc).__name__}: {exc}"
            ) from None

    # -- mirroring -----------------------------------------------------------------------

    async def mirror(self, event: Mapping[str, Any]) -> list[str]:
        """Copy every output; return their keys, in output order."""
        outputs = [str(url) for url in event.get("outputs") or []]
        return [await self.mirror_one(event, i, url) for i, url in enumerate(outputs)]

    async def mirror_one(self, event: Mapping[str, Any], index: int, url: str) -> str:
        async with fetch.open_output(
            self.ctx.http,
            url,
            timeout_s=self.ctx.timeout_s,
            allow_private=self.allow_private_networks,
        ) as response:
            content_type = response.headers.get("content-type") or "application/octet-stream"
            key = output_key(self.prefix, event, index, extension(content_type, url))
            async with (
                contextlib.aclosing(
                    fetch.read_capped(response, self.max_output_bytes, url)
                ) as chunks,
                contextlib.aclosing(fetch.parts(chunks, PART_BYTES)) as parts,
            ):
                await self.upload(key, parts, content_type)
        return key

    async def upload(self, key: str, parts: AsyncIterator[bytes], content_type: str) -> None:
        """One PutObject when the body fits a part, else a multipart upload."""
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            await self.call("put_object", key, Body=first, ContentType=content_type)
        else:
            await self.multipart(key, [first, second], parts, content_type)

    async def multipart(
        self, key: str, head: list[bytes], rest: AsyncIterator[bytes], content_type: str
    ) -> None:
        created = await self.call("create_multipart_upload", key, ContentType=content_type)
        upload_id = created["UploadId"]
        try:
            done = [await self.part(key, upload_id, n, body) for n, body in enumerate(head, 1)]
            async for body in rest:
                done.append(await self.part(key, upload_id, len(done) + 1, body))
            await self.call(
                "complete_multipart_upload",
                key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.call("abort_multipart_upload", key, UploadId=upload_id)
            raise

    async def part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        answer = await self.call(
            "upload_part", key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"ETag": answer["ETag"], "PartNumber": number}


def create(name: str, options: Mapping[str, Any], ctx: SinkContext) -> S3Sink:
    if get_session is None:
        raise ConfigError(MISSING_EXTRA)
    where = f"[sinks.{name}]"
    return S3Sink(
        str(options["bucket"]),
        ctx,
        prefix=option(options, "prefix", str, "", where),
        endpoint_url=option(options, "endpoint_url", str, "", where) or None,
        region=option(options, "region", str, DEFAULT_REGION, where),
        mirror_outputs=option(options, "mirror_outputs", bool, False, where),
        allow_private_networks=option(options, "allow_private_networks", bool, False, where),
        max_output_bytes=option(options, "max_output_bytes", int, DEFAULT_MAX_OUTPUT_BYTES, where),
    )


def option(options: Mapping[str, Any], key: str, kind: type[T], default: T, where: str) -> T:
    """`options[key]` if it has the right type, else a ConfigError naming the key."""
    value = options.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} {key} must be a {kind.__name__}, not {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ConfigError(f"{where} {key} must be at least 1, not {value!r}")
    return value
