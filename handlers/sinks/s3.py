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
`allow_private_networks`, `max_output_bytes` cap) and streamed: a body that fits one 8 MiB part
is a single PutObject, a larger one a multipart upload that is aborted on any failure, so no
partial object is left. Only image/* and video/* content types are kept (SVG excepted: it can
run scripts); anything else is stored as application/octet-stream with extension `bin`, so a
mirrored object never becomes a web page on the bucket's origin.

Mirroring is built to finish, however many or large the outputs:

* the event JSON is archived first, so it is there even if an output can never be fetched;
  when every output is mirrored it is written again with `mirrored_outputs: [keys]` added, so
  that field's presence means the mirror is complete;
* each output has its own deadline, `output_timeout_s` (fetch and upload), and the sink's
  budget for one event is `timeout_s + outputs * output_timeout_s` (`budget_s`, used by the
  delivery engine as the send's overall deadline);
* every output is tried even when one fails; a failure then fails the delivery (permanent if a
  retry cannot help that output), and a retry skips the outputs already stored: their key
  stem (`…/{n}.`) is listed and the object's `source-url-sha256` metadata (HEAD) must match
  the output URL. Without list/read permission on the bucket every retry fetches again.

What was mirrored is returned to the delivery engine (`receiver.core.outputs.Sent`), which
records it in the store with the delivery's outcome; sinks with `outputs_from` naming this sink
then send links to the copies (`link`): `public_base_url + key` when set (a CDN or public
bucket), else a presigned GET URL valid `presign_expiry_s` (default and maximum 7 days).

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
from typing import Any

from handlers.sinks import fetch, spec
from handlers.sinks.base import SinkContext, SinkError
from handlers.sinks.spec import Options, SinkSpec
from receiver.core import masking
from receiver.core.errors import ConfigError
from receiver.core.http import is_permanent
from receiver.core.outputs import MirroredOutput, Sent

try:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore import exceptions as boto_errors
    from botocore.handlers import validate_bucket_name
    from botocore.utils import (
        is_valid_endpoint_url,
        is_valid_ipv6_endpoint_url,
        validate_region_name,
    )
except ImportError:  # the s3 extra is optional; check() says how to install it
    get_session = None


PART_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 50 * 1024 * 1024
DEFAULT_OUTPUT_TIMEOUT_S = 60.0
ABORT_TIMEOUT_S = 10.0  # cleaning up a cancelled multipart upload may take this long, no more
SOURCE_META = "source-url-sha256"  # user metadata: which URL an output object was copied from
OCTET_STREAM = "application/octet-stream"
DEFAULT_REGION = "us-east-1"
MAX_PRESIGN_S = 7 * 86400  # the longest a SigV4 presigned URL may be valid
MISSING_EXTRA = "the s3 sink needs the s3 extra: pip install 'hookyard[s3]'"

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/tiff": "tiff",
    "image/bmp": "bmp",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
}
# Suffixes a URL may lend an output whose server did not name a media type.
MEDIA_SUFFIXES = frozenset(EXTENSIONS.values()) | {"tif", "m4v", "mkv"}
# image/* types that are documents a browser runs, not pictures.
ACTIVE_TYPES = frozenset({"image/svg+xml"})
_MEDIA_TYPE = re.compile(r"^(?:image|video)/[a-z0-9][a-z0-9.+-]{0,63}$")
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


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ("" when there is none)."""
    return (content_type or "").split(";")[0].strip().lower()


def stored_type(content_type: str | None) -> str:
    """The Content-Type an output is stored with: image/* and video/* as given (SVG excepted),
    anything else application/octet-stream, so the bucket never serves it as a page."""
    media = media_type(content_type)
    return media if _MEDIA_TYPE.match(media) and media not in ACTIVE_TYPES else OCTET_STREAM


def extension(content_type: str | None, url: str) -> str:
    """From a known media type, else (for a server that named no type, or a media type we have
    no suffix for) an image/video suffix of the URL path, else `bin`."""
    media = media_type(content_type)
    if media in EXTENSIONS:
        return EXTENSIONS[media]
    if media not in ("", OCTET_STREAM) and stored_type(media) == OCTET_STREAM:
        return "bin"  # the server says it is something else (text/html, svg, json…)
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:  # an unclosed `[` in the host: the fetch will refuse it anyway
        path = ""
    suffix = posixpath.splitext(path)[1].lower().lstrip(".")
    suffix = "jpg" if suffix == "jpeg" else suffix
    return suffix if suffix in MEDIA_SUFFIXES else "bin"


def source_tag(url: str) -> str:
    """What an output object records of its source URL (a digest: URLs may carry tokens)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def output_urls(event: Mapping[str, Any]) -> list[str]:
    outputs = event.get("outputs")
    return [str(url) for url in outputs] if isinstance(outputs, list) else []


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
        permanent = is_permanent(status)
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
        output_timeout_s: float = DEFAULT_OUTPUT_TIMEOUT_S,
        public_base_url: str | None = None,
        presign_expiry_s: int = MAX_PRESIGN_S,
    ) -> None:
        self.bucket = bucket
        self.ctx = ctx
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.mirror_outputs = mirror_outputs
        self.allow_private_networks = allow_private_networks
        self.max_output_bytes = max_output_bytes
        self.output_timeout_s = output_timeout_s
        self.public_base_url = public_base_url
        self.presign_expiry_s = presign_expiry_s
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    def budget_s(self, event: Mapping[str, Any]) -> float:
        """`timeout_s` for the event JSON, plus `output_timeout_s` per output when mirroring:
        the whole send's deadline grows with the work instead of cutting it off."""
        outputs = len(output_urls(event)) if self.mirror_outputs else 0
        return self.ctx.timeout_s + outputs * self.output_timeout_s

    async def send(self, event: Mapping[str, Any]) -> int | Sent | None:
        key = event_key(self.prefix, event)  # a bad received_at fails before any upload
        if not self.mirror_outputs:
            return await self.put_event(key, event_body(event, None))
        urls = output_urls(event)
        if urls:  # archived now, so it is kept even if an output can never be fetched
            await self.put_event(key, event_body(event, None))
        mirrored = await self.mirror(event, urls)
        status = await self.put_event(key, event_body(event, [m.key for m in mirrored]))
        return Sent(status, tuple(mirrored))

    async def link(self, bucket: str, key: str) -> str:
        """A working URL of a mirrored copy: `public_base_url + key`, else presigned (signing
        is local: no request is made)."""
        if self.public_base_url:
            return self.public_base_url + urllib.parse.quote(key)
        try:
            client = await self.client()
            url = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=self.presign_expiry_s,
            )
        except (ValueError, boto_errors.BotoCoreError) as exc:
            raise SinkError(f"cannot presign s3://{bucket}/{key}: {exc}"[:300]) from None
        return str(url)

    async def put_event(self, key: str, body: bytes) -> int | None:
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
                    # Requests are SigV4 anyway; this makes presigned links SigV4 too (botocore
                    # presigns with SigV2 by default, which newer buckets and regions and R2
                    # refuse). It is also what limits presign_expiry_s to 7 days.
                    signature_version="s3v4",
                )
                creator = get_session().create_client(
                    "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
                self._client = await self._stack.enter_async_context(creator)
            return self._client

    async def call(self, operation: str, key: str | None, **params: Any) -> Any:
        """One S3 operation on `key` (None: on the bucket) in our bucket, failures classified."""
        where = f"s3://{self.bucket}/{key if key is not None else params.get('Prefix', '')}"
        if key is not None:
            params["Key"] = key
        try:
            client = await self.client()
            return await getattr(client, operation)(Bucket=self.bucket, **params)
        except ValueError as exc:  # botocore's word for a malformed endpoint_url or region
            raise SinkError(f"cannot build the S3 client: {exc}"[:300], permanent=True) from None
        except (boto_errors.BotoCoreError, boto_errors.ClientError) as exc:
            raise s3_error(exc, f"S3 {operation} {where}") from None
        except OSError as exc:  # a socket's TimeoutError included
            raise SinkError(f"S3 {operation} {where}: {type(exc).__name__}: {exc}") from None

    # -- mirroring -----------------------------------------------------------------------

    async def mirror(self, event: Mapping[str, Any], urls: list[str]) -> list[MirroredOutput]:
        """Copy every output (each within its own deadline); return the copies in output order.
        Every output is tried even when one fails, so a retry has less left to do."""
        keys: list[MirroredOutput] = []
        failures: list[tuple[int, SinkError]] = []
        for index, url in enumerate(urls):
            try:
                keys.append(await self.mirror_in_time(event, index, url))
            except SinkError as exc:
                failures.append((index, exc))
        if failures:
            raise mirror_failed(failures, len(urls))
        return keys

    async def mirror_in_time(
        self, event: Mapping[str, Any], index: int, url: str
    ) -> MirroredOutput:
        try:
            async with asyncio.timeout(self.output_timeout_s):
                return await self.mirror_one(event, index, url)
        except TimeoutError:
            raise SinkError(
                f"output {url[:200]} was not mirrored within output_timeout_s = "
                f"{self.output_timeout_s:g}"
            ) from None

    async def mirror_one(self, event: Mapping[str, Any], index: int, url: str) -> MirroredOutput:
        done = await self.already_mirrored(event, index, url)
        if done is not None:
            return done
        async with fetch.open_output(
            self.ctx.http,
            url,
            timeout_s=self.output_timeout_s,
            allow_private=self.allow_private_networks,
        ) as response:
            content_type = response.headers.get("content-type")
            key = output_key(self.prefix, event, index, extension(content_type, url))
            async with (
                contextlib.aclosing(
                    fetch.body_chunks(response, self.max_output_bytes, url)
                ) as chunks,
                contextlib.aclosing(fetch.parts(chunks, PART_BYTES)) as parts,
            ):
                object_params = {
                    "ContentType": stored_type(content_type),
                    "Metadata": {SOURCE_META: source_tag(url)},
                }
                await self.upload(key, parts, object_params)
        return MirroredOutput(index, self.bucket, key, str(object_params["ContentType"]))

    async def already_mirrored(
        self, event: Mapping[str, Any], index: int, url: str
    ) -> MirroredOutput | None:
        """The key of output `index` if an earlier attempt stored it from this same URL. The
        extension depends on the content type, known only after fetching, so the key's stem
        is listed and each candidate's metadata read (HEAD). A bucket we may not list or read
        (write-only credentials) only means fetching again."""
        stem = output_key(self.prefix, event, index, "")  # "…/{n}."
        try:
            listed = await self.call("list_objects_v2", None, Prefix=stem, MaxKeys=8)
            for item in listed.get("Contents", []):
                head = await self.call("head_object", str(item["Key"]))
                if head.get("Metadata", {}).get(SOURCE_META) == source_tag(url):
                    content_type = str(head.get("ContentType") or OCTET_STREAM)
                    return MirroredOutput(index, self.bucket, str(item["Key"]), content_type)
        except SinkError:
            return None
        return None

    async def upload(
        self, key: str, parts: AsyncIterator[bytes], object_params: Mapping[str, Any]
    ) -> None:
        """One PutObject when the body fits a part, else a multipart upload."""
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            await self.call("put_object", key, Body=first, **object_params)
        else:
            await self.multipart(key, [first, second], parts, object_params)

    async def multipart(
        self,
        key: str,
        head: list[bytes],
        rest: AsyncIterator[bytes],
        object_params: Mapping[str, Any],
    ) -> None:
        created = await self.call("create_multipart_upload", key, **object_params)
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
        except BaseException:  # a timeout's cancellation included: leave no parts behind
            with contextlib.suppress(Exception):
                async with asyncio.timeout(ABORT_TIMEOUT_S):
                    await self.call("abort_multipart_upload", key, UploadId=upload_id)
            raise

    async def part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        answer = await self.call(
            "upload_part", key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"ETag": answer["ETag"], "PartNumber": number}


def mirror_failed(failures: list[tuple[int, SinkError]], total: int) -> SinkError:
    """One error for the outputs that could not be mirrored: permanent when one of them can
    never be (a retry would fail again), with the first failure's status and message."""
    index, first = failures[0]
    more = f" ({len(failures) - 1} more failed)" if len(failures) > 1 else ""
    permanent = any(exc.permanent for _, exc in failures)
    waits = [exc.retry_after_s for _, exc in failures if exc.retry_after_s is not None]
    return SinkError(
        f"output {index + 1} of {total}{more}: {first.message}",
        status_code=first.status_code,
        permanent=permanent,
        retry_after_s=None if permanent or not waits else max(waits),
    )


# -- configuration ---------------------------------------------------------------------------


def check(options: Options) -> list[str]:
    """Type checks, the extra being installed, then what botocore itself would refuse at the
    first send (every delivery would go dead): both `check` and `serve` say so at start."""
    problems = [
        *spec.text(options, "bucket"),
        *spec.text(options, "prefix", empty=True),
        *spec.http_url(options, "endpoint_url"),
        *spec.text(options, "region"),
        *spec.flag(options, "mirror_outputs"),
        *spec.flag(options, "allow_private_networks"),
        *spec.whole(options, "max_output_bytes", 1),
        *spec.seconds(options, "output_timeout_s", 0.1),
        *spec.http_url(options, "public_base_url"),
        # 7 days: the longest an S3 (SigV4) presigned link may be valid
        *spec.whole(options, "presign_expiry_s", 1, MAX_PRESIGN_S),
    ]
    if get_session is None:
        return [*problems, MISSING_EXTRA]
    return problems or botocore_problems(options)


def botocore_problems(options: Options) -> list[str]:
    """botocore's own rules for the bucket, region and endpoint (options already typed)."""
    problems = []
    bucket = options.get("bucket")
    try:
        validate_bucket_name({"Bucket": bucket} if bucket is not None else {})
    except boto_errors.ParamValidationError:
        problems.append(
            f"bucket {str(bucket)[:80]!r} is not a name S3 accepts: letters, digits, "
            "'.', '-' and '_' (at most 255), or an access point ARN"
        )
    region = options.get("region")
    try:
        validate_region_name(region)
    except boto_errors.InvalidRegionError:
        problems.append(
            f'region {str(region)[:80]!r} is not a region name: letters, digits and "-", '
            'e.g. "us-east-1" (R2: "auto")'
        )
    endpoint = options.get("endpoint_url")
    if endpoint and not (is_valid_endpoint_url(endpoint) or is_valid_ipv6_endpoint_url(endpoint)):
        problems.append(
            "endpoint_url has a host botocore refuses; give a DNS name or an IP address, "
            "e.g. http://127.0.0.1:9000"
        )
    return problems


def describe(options: Options) -> str:
    endpoint = options.get("endpoint_url")
    at = f" at {masking.mask_url(str(endpoint))}" if endpoint else ""
    return f"s3://{options['bucket']}/{options.get('prefix', '')}{at}"


def secrets(options: Options) -> list[str]:
    endpoint = options.get("endpoint_url")
    return masking.url_secrets(endpoint) if isinstance(endpoint, str) else []


def create(name: str, options: Options, ctx: SinkContext) -> S3Sink:
    """An S3Sink from options `check` accepted; keys left out take their defaults."""
    if get_session is None:  # built without check (an embedding, a test): the same word
        raise ConfigError(MISSING_EXTRA)
    return S3Sink(
        options["bucket"],
        ctx,
        prefix=options.get("prefix", ""),
        endpoint_url=options.get("endpoint_url"),
        region=options.get("region", DEFAULT_REGION),
        mirror_outputs=options.get("mirror_outputs", False),
        allow_private_networks=options.get("allow_private_networks", False),
        max_output_bytes=options.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES),
        output_timeout_s=float(options.get("output_timeout_s", DEFAULT_OUTPUT_TIMEOUT_S)),
        public_base_url=options.get("public_base_url") or None,
        presign_expiry_s=options.get("presign_expiry_s", MAX_PRESIGN_S),
    )


SPEC = SinkSpec(
    "s3",
    create,
    check,
    describe,
    secrets,
    required=frozenset({"bucket"}),
    optional=frozenset(
        {
            "prefix",
            "endpoint_url",
            "region",
            "mirror_outputs",
            "allow_private_networks",
            "max_output_bytes",
            "output_timeout_s",
            "public_base_url",
            "presign_expiry_s",
        }
    ),
)
