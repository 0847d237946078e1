"""`hookyard serve --workers N`: N web processes on one port and one worker, supervised.

The supervisor binds the listening socket once and hands it to each web process (they accept
from the same socket, so the kernel spreads connections over them), starts one worker process
for delivery and polling, and restarts any child that dies (with a growing pause if it keeps
dying), logging each exit. Every child shares the store (all state is in rows) and one
Prometheus multiprocess directory, so `/metrics` of any web process covers them all.
SIGTERM or SIGINT stops the children gracefully (SIGKILL after the grace period).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

log = structlog.get_logger("hookyard.supervisor")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long starts again without a pause
GRACE_S = 15.0


@dataclass
class Child:
    """One supervised process: what to run, and how often it has died lately."""

    name: str
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    pause_s: float = FIRST_PAUSE_S
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, pass_fds=self.pass_fds, env=env)  # noqa: S603
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("child.started", child=self.name, pid=self.proc.pid)


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket every web process accepts from."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Runs the children until told to stop."""

    def __init__(self, children: Sequence[Child], metrics_dir: str | None = None) -> None:
        self.children = list(children)
        self.stopping = False
        self.own_metrics_dir = metrics_dir is None and not os.environ.get(METRICS_DIR_ENV)
        self.metrics_dir = (
            metrics_dir
            or os.environ.get(METRICS_DIR_ENV)
            or tempfile.mkdtemp(prefix="hookyard-metrics-")
        )
        self.env = {**os.environ, METRICS_DIR_ENV: self.metrics_dir}

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            for child in self.children:
                child.start(self.env)
            while not self.stopping:
                self._watch()
                time.sleep(0.2)
        finally:
            self._stop_all()
            if self.own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 0

    def _stop(self, signum: int, _: FrameType | None) -> None:
        log.info("supervisor.stopping", signal=signal.Signals(signum).name)
        self.stopping = True

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._died(child, now)
            if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                child.start(self.env)

    def _died(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        ran = now - child.started_at
        child.pause_s = FIRST_PAUSE_S if ran >= STABLE_AFTER_S else min(
            child.pause_s * 2, MAX_PAUSE_S
        )
        child.restart_at = now + child.pause_s
        log.error(
            "child.exited", child=child.name, pid=child.proc.pid, exit_code=code,
            ran_s=round(ran, 1), restart_in_s=child.pause_s,
        )
        child.proc = None

    def _stop_all(self) -> None:
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def children(
    config_path: str, sock: socket.socket, web: int, *, worker: bool = True
) -> list[Child]:
    """`web` web processes sharing `sock`, and (with `worker`) one worker process."""
    base = [sys.executable, "-m", "receiver.cli"]
    fd = sock.fileno()
    made = [
        Child(f"web-{n}", [*base, "serve", "--config", config_path, "--no-worker",
                           "--fd", str(fd)], pass_fds=(fd,))
        for n in range(1, web + 1)
    ]
    if worker:
        made.append(Child("worker", [*base, "worker", "--config", config_path]))
    return made
