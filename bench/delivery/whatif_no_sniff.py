"""What-if launcher (not the normal way to run hookyard): `hookyard serve` with httpcore's
async-library detection short-cut to "asyncio".

httpcore 1.0.9 asks `current_async_library()` for every lock, event and shield it creates (a
few per request), and that function starts with `import sniffio`. This venv has no sniffio
(anyio 4.16 no longer depends on it), so every call runs the import machinery to fail again:
a py-spy profile of the delivery loop put ~25 % of the event-loop thread there. This launcher
replaces the function before hookyard starts, to measure what installing sniffio (or httpcore
caching the answer) would give. receiver/ is unchanged. Used by
`bench/delivery/run.py --whatif-no-sniff`.
"""

from __future__ import annotations

import httpcore._synchronization as sync

sync.current_async_library = lambda: "asyncio"

from receiver.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
