"""Peer benchmark: hookyard vs adnanh/webhook vs a bare Starlette endpoint, same requests.

    .venv/bin/python bench/peer/run.py [--rounds 3] [--duration 15] [--connections 64]
                                           [--threads 1] [--with-sync]

The ingest benchmark's method (bench/ingest/run.py, whose helpers this imports): wrk with
bench/ingest/requests.lua replaying pre-signed unique webhooks, 64 connections, one wrk thread,
drain before stop, requests/s over first-request..last-answer, the servers alternating within one
run (hookyard, webhook, bare, hookyard, webhook, bare, ...), medians over the rounds.

Every request is the same shape for all servers: `POST /hooks/github`, a 206-byte JSON body,
`Content-Type: application/json` and GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of
the body>` with one shared secret (plus the two X-Webhook-* headers the ingest batch writer
adds, which nobody reads here).

* hookyard (`hookyard serve`): a `generic` source `github` with `signature = { scheme = "hmac",
  header = "X-Hub-Signature-256", prefix = "sha256=", template = "{body}" }` — verifies the HMAC,
  parses the JSON, stores the event (SQLite, synchronous = FULL, committed before the 200; idem-
  potency key = SHA-256 of the body, so every request is a new event). No sink routed (as the
  ingest benchmark's default). Every hookyard round sends a fresh batch, each request once.
* webhook (adnanh/webhook, Debian package `webhook`): one hook `github` with the trigger rule
  `payload-hmac-sha256` on header X-Hub-Signature-256 (same secret), `execute-command`
  /bin/true, `include-command-output-in-response: false` (the default: it answers at once and
  runs the command in a goroutine, fork/exec per hook, without waiting for it). A wrong
  signature makes webhook 2.8 answer 500 ("error evaluating hook"); a rule that is merely not
  satisfied answers 401 (`trigger-rule-mismatch-http-response-code`; default 200). Stores
  nothing. `--with-sync` adds a second webhook server with `include-command-output-in-response:
  true` (it waits for /bin/true before answering).
* bare (bench/ingest/bare_app.py under uvicorn with hookyard's uvicorn settings): reads the body,
  answers JSON; verifies nothing, stores nothing.

webhook and bare cycle through 20 000 distinct signed requests (they do not dedupe). Before the
rounds, each server is checked to refuse a wrong signature (non-2xx) and accept a right one.
For the webhook runs, the kernel's process counter (/proc/stat `processes`) is read before and
1 s after each run: it shows that one process was created per hook (the /bin/true).

Writes bench/peer/results.json and the chart bench/peer/peer.png; prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench.ingest import run as ingest  # noqa: E402

SECRET = "bench-github-secret-0123456789"
SOURCE = "github"
CONFIG = """\
[server]
host = "127.0.0.1"
database = "sqlite:///{db}"

[sources.github]
provider = "generic"
secrets = ["{secret}"]

[sources.github.signature]
scheme = "hmac"
header = "X-Hub-Signature-256"
prefix = "sha256="
template = "{{body}}"
"""


def hooks_json(workdir: Path, capture: bool) -> list[dict[str, Any]]:
    return [{
        "id": SOURCE,
        "execute-command": "/bin/true",
        "command-working-directory": str(workdir),
        "include-command-output-in-response": capture,
        "response-message": "ok",
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {"match": {
            "type": "payload-hmac-sha256",
            "secret": SECRET,
            "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
        }},
    }]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tail", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--initial-rate", type=float, default=4000.0)
    p.add_argument("--bare-batch", type=int, default=20000)
    p.add_argument("--with-sync", action="store_true",
                   help="also measure webhook waiting for the command")
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--chart", default=str(HERE / "peer.png"))
    args = p.parse_args()
    wrk, webhook = shutil.which("wrk"), shutil.which("webhook")
    if wrk is None or webhook is None:
        print("run.py: needs wrk and webhook: sudo apt-get install -y wrk webhook",
              file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hookyard-peer-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "hookyard.db"
    config = workdir / "hookyard.toml"
    config.write_text(CONFIG.format(db=db, secret=SECRET))
    ingest.SOURCE = SOURCE
    verifier = ingest._verifier(config)
    machine = ingest._machine(wrk, workdir)
    webhook_version = subprocess.run([webhook, "-version"], capture_output=True, text=True,
                                     check=False).stdout.strip()
    machine["webhook"] = webhook_version
    print(ingest._machine_line(machine) + f", {webhook_version}", flush=True)
    targets = ["hookyard", "webhook", "bare"] + (["webhook-sync"] if args.with_sync else [])
    results: dict[str, Any] = {
        "benchmark": "peer: hookyard vs adnanh/webhook vs bare Starlette, POST /hooks/github",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([".venv/bin/python", "bench/peer/run.py", *sys.argv[1:]]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "chart")},
        "machine": machine,
        "code": ingest._code_version(),
        "webhook_hooks": hooks_json(workdir, False),
        "rounds": [],
    }
    with servers(config, workdir, webhook, args.with_sync) as urls:
        for name in targets:
            check_verifies(name, urls[name], verifier)
        batch = workdir / "cycle-requests.http"
        rate = float(args.initial_rate)
        if args.warmup > 0:
            print(f"warm-up: {args.warmup:g} s each", flush=True)
            for name in targets:
                rate = max(rate, run_one(name, wrk, args, urls, db, verifier, workdir, batch,
                                         rate, args.warmup, "warmup")["rps"])
        for number in range(1, args.rounds + 1):
            for name in targets:
                row = run_one(name, wrk, args, urls, db, verifier, workdir, batch, rate,
                              args.duration, number)
                if name == "hookyard":
                    rate = max(rate, row["rps"])
                row["round"] = number
                results["rounds"].append(row)
                print(line(row), flush=True)
    results["summary"] = summary(results["rounds"], targets)
    print_summary(results["summary"], targets)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    chart(results, targets, Path(args.chart))
    print(f"wrote {args.out} and {args.chart}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_one(name: str, wrk: str, args: argparse.Namespace, urls: dict[str, str], db: Path,
            verifier: Any, workdir: Path, batch: Path, rate: float, seconds: float,
            number: Any) -> dict[str, Any]:
    if name == "hookyard":
        return ingest._hook_round(wrk, args, urls[name], db, verifier, workdir, rate, seconds,
                                  number)
    target_batch = batch.with_name(f"{name}-{batch.name}")
    if not target_batch.exists():
        ingest._write_batch(target_batch, verifier, args.bare_batch, urls[name])
    forks_before = forks()
    row = ingest._bare_round(wrk, args, urls[name], target_batch, seconds)
    row["target"] = name
    if name.startswith("webhook"):
        time.sleep(1.0)  # commands still running in the background finish
        # Processes created on the whole machine during the run (wrk and the Python servers
        # fork nothing while it runs): about one per hook if webhook really ran /bin/true.
        row["forks"] = forks() - forks_before
    return row


def forks() -> int:
    """The kernel's count of processes created since boot (/proc/stat `processes`)."""
    for text in Path("/proc/stat").read_text().splitlines():
        if text.startswith("processes "):
            return int(text.split()[1])
    return -1


def check_verifies(name: str, url: str, verifier: Any) -> None:
    """A wrong signature must be refused (except by bare, which checks nothing), a right one
    accepted: proof that each server really verifies on this configuration."""
    body = ingest._body("check-" + name)
    good = {"Content-Type": "application/json", **verifier.sign(body)}
    bad = {**good, "X-Hub-Signature-256": "sha256=" + "00" * 32}
    ok = httpx.post(url, content=body, headers=good, timeout=10)
    refused = httpx.post(url, content=body, headers=bad, timeout=10)
    print(f"check {name}: right signature -> {ok.status_code}, wrong -> {refused.status_code}",
          flush=True)
    assert ok.status_code == 200, (name, ok.status_code, ok.text)
    if name != "bare":
        assert refused.status_code >= 400, (name, refused.status_code, refused.text)


@contextlib.contextmanager
def servers(config: Path, workdir: Path, webhook: str, with_sync: bool
            ) -> Iterator[dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WEB_CONCURRENCY", None)
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}

    def launch(name: str, argv: list[str], cwd: Path, ready: str) -> None:
        log_path = workdir / f"{name}.log"
        with log_path.open("ab") as log:
            procs.append(subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                          env=env))
        ingest._wait(procs[-1], ready, log_path, name)

    try:
        port = ingest._free_port()
        launch("hookyard", [sys.executable, "-m", "receiver.cli", "serve", "--config",
                            str(config), "--host", "127.0.0.1", "--port", str(port)],
               workdir, f"http://127.0.0.1:{port}/readyz")
        urls["hookyard"] = f"http://127.0.0.1:{port}/hooks/{SOURCE}"
        for name, capture in [("webhook", False)] + ([("webhook-sync", True)] if with_sync
                                                      else []):
            port = ingest._free_port()
            hooks = workdir / f"{name}-hooks.json"
            hooks.write_text(json.dumps(hooks_json(workdir, capture), indent=2))
            launch(name, [webhook, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port",
                          str(port)], workdir, f"http://127.0.0.1:{port}/")
            urls[name] = f"http://127.0.0.1:{port}/hooks/{SOURCE}"
        port = ingest._free_port()
        launch("bare", [sys.executable, "-m", "uvicorn", "bench.ingest.bare_app:app",
                        "--host", "127.0.0.1", "--port", str(port), *ingest.UVICORN_FLAGS],
               ROOT, f"http://127.0.0.1:{port}/hooks/x")
        urls["bare"] = f"http://127.0.0.1:{port}/hooks/{SOURCE}"
        yield urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()


def line(r: dict[str, Any]) -> str:
    extra = ""
    if r["target"] == "hookyard":
        extra = f" stored={r['stored']} (200s {r['ok200']}, diff {r['stored_minus_200']:+d})"
    if "forks" in r:
        extra = f" processes created={r['forks']} (200s {r['ok200']})"
    return (f"round {r['round']} {r['target']:<12} {r['rps']:9.1f} req/s  p50 "
            f"{r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non2xx']}  "
            f"errors {sum(r['socket_errors'].values())}  in-flight {r['in_flight_at_stop']}"
            f"{extra}")


def summary(rounds: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    med = statistics.median
    by = {t: [r for r in rounds if r["target"] == t] for t in targets}
    s: dict[str, Any] = {t: {"rps_median": med(r["rps"] for r in rows),
                             "rps_rounds": [r["rps"] for r in rows],
                             "p50_ms_median": med(r["p50_ms"] for r in rows),
                             "p99_ms_median": med(r["p99_ms"] for r in rows),
                             "non2xx": sum(r["non2xx"] for r in rows),
                             "socket_errors": sum(sum(r["socket_errors"].values())
                                                  for r in rows),
                             "ok200_total": sum(r["ok200"] for r in rows),
                             "forks_total": sum(r.get("forks", 0) for r in rows)}
                         for t, rows in by.items()}
    hook = by["hookyard"]
    s["hookyard"]["stored_minus_200"] = [r["stored_minus_200"] for r in hook]
    s["hookyard"]["stored_total"] = sum(r["stored"] for r in hook)
    for other in targets[1:]:
        s[f"hookyard_over_{other}"] = {
            "ratio_of_medians": s["hookyard"]["rps_median"] / s[other]["rps_median"],
            "per_round": [h["rps"] / o["rps"] for h, o in zip(hook, by[other], strict=True)],
        }
    return s


def print_summary(s: dict[str, Any], targets: list[str]) -> None:
    print("\nmedians:")
    for t in targets:
        print(f"  {t:<12} {s[t]['rps_median']:9.1f} req/s  p50 {s[t]['p50_ms_median']:7.2f} ms"
              f"  p99 {s[t]['p99_ms_median']:7.2f} ms  non-2xx {s[t]['non2xx']}")
    for t in targets[1:]:
        r = s[f"hookyard_over_{t}"]
        print(f"  hookyard / {t}: {r['ratio_of_medians']:.3f} (per round "
              + ", ".join(f"{x:.3f}" for x in r["per_round"]) + ")")


def chart(results: dict[str, Any], targets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    colors = {"hookyard": "#2a7ab9", "webhook": "#d9822b", "webhook-sync": "#b85c1a",
              "bare": "#7a7a7a"}
    labels = {"hookyard": "hookyard\nHMAC + SQLite", "webhook": "adnanh/webhook\nHMAC + exec",
              "webhook-sync": "webhook, waits\nHMAC + exec", "bare": "bare Starlette\nnothing"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = range(len(targets))
    ax1.bar(xs, [s[t]["rps_median"] for t in targets], color=[colors[t] for t in targets])
    for x, t in zip(xs, targets, strict=True):
        ax1.scatter([x] * len(s[t]["rps_rounds"]), s[t]["rps_rounds"], color="black", s=12,
                    zorder=3)
        ax1.annotate(f"{s[t]['rps_median']:.0f}", (x, s[t]["rps_median"]), ha="center",
                     va="bottom", fontsize=9, xytext=(0, 3), textcoords="offset points")
    ax1.set_xticks(list(xs), [labels[t] for t in targets], fontsize=8)
    ax1.set_ylabel("requests/s (median; dots = rounds)")
    ax1.set_title("Throughput, 64 connections, wrk")
    width = 0.38
    ax2.bar([x - width / 2 for x in xs], [s[t]["p50_ms_median"] for t in targets], width,
            label="p50", color=[colors[t] for t in targets], alpha=0.55)
    ax2.bar([x + width / 2 for x in xs], [s[t]["p99_ms_median"] for t in targets], width,
            label="p99", color=[colors[t] for t in targets])
    ax2.set_xticks(list(xs), [labels[t] for t in targets], fontsize=8)
    ax2.set_ylabel("latency, ms (median over rounds)")
    ax2.set_title("Latency (light: p50, dark: p99)")
    m = results["machine"]
    fig.suptitle(f"POST /hooks/github, pre-signed unique webhooks — {m['nproc']} CPUs "
                 f"({m['cpu_model']}), {results['settings']['rounds']} alternating rounds x "
                 f"{results['settings']['duration']:g} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
