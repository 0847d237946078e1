"""JSON logs through structlog, with a request id per request and secrets scrubbed.

Every record passes `Redactor`: values under sensitive key names are replaced, and any configured
secret (webhook secrets, API keys, tokens, Slack URLs, the credential parts of configured URLs)
found anywhere in the rendered line is masked, so a secret that reaches a log line by accident
still never reaches the log. Tracebacks are rendered into the line, so they are masked too.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import select
import sys
import threading
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, NamedTuple, TextIO

import orjson
import structlog
from structlog.processors import add_log_level, format_exc_info

from receiver.core import events, masking
from receiver.core.loops import running_loop

SENSITIVE_KEYS = frozenset(
    {
        "secret",
        "secrets",
        "signature",
        "api_key",
        "authorization",
        "token",
        "admin_token",
        "password",
        "webhook-signature",
        "x-webhook-signature-256",
        "stripe-signature",
    }
)
MASK = masking.REDACTED
_PLAIN = frozenset({str, int, float, bool, type(None)})  # values with nothing nested to walk


class Redactor:
    """Masks sensitive keys (a structlog processor, on the record) and every configured secret
    (`render`, on the finished JSON line).

    Secrets are looked for in the rendered line rather than in each value: one substring search
    per secret over a short line costs a fraction of walking every value, and it also covers
    what a value-walk can miss (keys, numbers' text, rendered tracebacks). Each secret is looked
    for as written and as JSON escapes it, so a secret holding a quote or a backslash is found
    too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = masking.ordered(secrets)
        escaped = (orjson.dumps(s).decode()[1:-1] for s in self.secrets)
        self._in_line = masking.ordered({*self.secrets, *escaped})

    def __call__(
        self, _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # Most records hold only plain values and no sensitive key: two C-level scans.
        if _PLAIN.issuperset(map(type, event_dict.values())) and SENSITIVE_KEYS.isdisjoint(
            map(str.lower, event_dict)
        ):
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self.clean(key, value)
        return event_dict

    @staticmethod
    def clean(key: str, value: Any) -> Any:
        """`value` with whatever sits under a sensitive key name, at any depth, masked."""
        if key.lower() in SENSITIVE_KEYS:
            return MASK
        if isinstance(value, dict):
            return {k: Redactor.clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [Redactor.clean(key, v) for v in value]
        return value

    def render(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
        """The record as one JSON line, every configured secret in it masked."""
        return masking.mask_secrets(_render(event_dict), self._in_line)

    def finish(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        """The end of hookyard's own chain as one processor: level, timestamp, a traceback
        rendered (before masking: tracebacks hold URLs), sensitive keys masked, the line.
        One call instead of five on every line, the webhook's included."""
        event_dict = _timestamp(logger, method, add_log_level(logger, method, event_dict))
        if "exc_info" in event_dict:
            event_dict = format_exc_info(logger, method, event_dict)
        return self.render(logger, method, self(logger, method, event_dict))


def _timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """ISO 8601 UTC with microseconds (structlog's TimeStamper, at a third of the cost)."""
    event_dict["timestamp"] = events.utc_now_iso()
    return event_dict


def _render(record: Any, **_: Any) -> str:
    """One JSON line, by orjson (a tenth of the standard library's cost per line); what it
    cannot write natively (exceptions, paths) as its str()."""
    return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class LoopBatchedStream:
    """A text stream that writes the lines logged in one event-loop turn with one write.

    structlog's WriteLogger and logging's StreamHandler flush after every line: a write()
    system call per line, so one per webhook, which cost the web process more than rendering
    the line did (bench/RESULTS.md, "Ingest, fourth session"). Here a flush on a thread that runs
    an event loop only asks for one write at the end of the loop's current turn (`call_soon`),
    so the lines of that turn go out together (in writes of at most PIPE_BUF bytes, whole
    lines each), in order, microseconds later. A flush anywhere else (a thread with no loop,
    start-up, the CLI) writes at once, pending lines included; what is still pending when the
    process exits is written by an atexit hook.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def write(self, text: str) -> int:
        with self._lock:
            self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        try:
            loop = running_loop()
        except RuntimeError:
            self.drain()
            return
        if self._scheduled:  # the usual case under load: this turn's drain is on its way
            return
        with self._lock:
            already, self._scheduled = self._scheduled, True
        if not already:
            loop.call_soon(self.drain)

    def line(self, message: str) -> None:
        """One rendered line, queued and flushed: structlog's logger methods (configure makes
        this stream hookyard's structlog logger, in place of a WriteLogger around it)."""
        with self._lock:
            self._pending.append(message + "\n")
        self.flush()

    msg = log = debug = info = warn = warning = error = err = critical = exception = line
    fatal = failure = line

    def drain(self) -> None:
        """Write everything pending now, in as few writes of at most PIPE_BUF bytes each."""
        with self._lock:
            lines, self._pending = self._pending, []
            self._scheduled = False
            for chunk in _whole_lines(lines, select.PIPE_BUF):
                self.stream.write(chunk)
                self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def _whole_lines(lines: list[str], limit: int) -> Iterator[str]:
    """The lines joined into pieces of at most `limit` bytes, each ending at a line's end (a
    longer line is a piece of its own). On a pipe (journald, a container runtime, the
    supervisor's children sharing stdout) a write of at most PIPE_BUF bytes is never
    interleaved with another process's writes; a longer one may be, mid-line."""
    piece: list[str] = []
    size = 0
    for line in lines:
        n = len(line) if line.isascii() else len(line.encode())
        if piece and size + n > limit:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += n
    if piece:
        yield "".join(piece)


_batched: list[LoopBatchedStream] = []  # the stream configure(batched=True) set up last


class _Direct(NamedTuple):
    """What `hot_info` writes with: set by configure(cache=True, batched=True)."""

    processors: list[Any]  # hookyard's structlog chain (the list structlog was given)
    steps: tuple[Any, Any]  # what that list held: merge_contextvars, Redactor.finish
    enabled: bool  # INFO lines are written at the configured level
    stream: LoopBatchedStream


_direct: _Direct | None = None


def hot_info(logger: Any, event: str, **fields: Any) -> None:
    """`logger.info(event, **fields)` for a line written on every request (webhook.accepted):
    the same line, made without structlog's per-call machinery (the lazy proxy, the bound
    logger's copy of its context, the processor loop), which cost as much as the line itself.
    Only where hookyard's own configuration is in force (serve, worker); anything else (a
    test capturing logs, another configuration) goes through `logger`."""
    direct = _direct
    # structlog.testing.capture_logs swaps the processors inside the same list: compare them.
    chain = structlog.get_config()["processors"]
    if direct is None or chain is not direct.processors or tuple(chain) != direct.steps:
        logger.info(event, **fields)
        return
    if direct.enabled:
        merge, finish = direct.steps
        fields["event"] = event  # keys in structlog's order: the call's, event, then context
        direct.stream.line(finish(None, "info", merge(None, "info", fields)))


@atexit.register
def _drain_at_exit() -> None:
    for stream in _batched:
        with contextlib.suppress(ValueError, OSError):  # closed, or a pipe nobody reads
            stream.drain()


def configure(
    secrets: Iterable[str] = (),
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    cache: bool = False,
    batched: bool = False,
) -> None:
    """Send hookyard's and the standard library's logs (uvicorn's) to `stream` as JSON lines;
    `batched`: through a LoopBatchedStream (the long-running commands)."""
    redactor = Redactor(secrets)
    out: Any = stream or sys.stdout
    _batched.clear()
    if batched:
        out = LoopBatchedStream(out)
        _batched.append(out)
    shared: list[Any] = [structlog.contextvars.merge_contextvars, add_log_level, _timestamp]
    global _direct
    processors: list[Any] = [structlog.contextvars.merge_contextvars, redactor.finish]
    _direct = None
    if cache and isinstance(out, LoopBatchedStream):
        _direct = _Direct(processors, (processors[0], processors[1]), level <= logging.INFO, out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=(lambda *_: out) if batched else structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=cache,  # off in tests: capture_logs() needs live config
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                format_exc_info,
                redactor,
                redactor.render,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn may have configured these (in tests, an in-process server does): route them
        # through the root handler, so every line is JSON and redacted.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for chatty in ("httpx", "httpcore", "botocore", "aiobotocore"):  # a line per request
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
