"""`hookyard jobs watch|list` against the configured database (the server need not run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONFIG = """
[server]
database = "sqlite:///{db}"

[sources.revid]
provider = "revid"
api_key = "sk_live_test"

[sources.rendergrid]
provider = "rendergrid"
secrets = ["rg-secret-0123456789"]
"""


def hookyard(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, check=False)


def test_jobs_watch_is_idempotent_and_list_shows_the_job(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text(CONFIG.format(db=tmp_path / "h.db"))
    first = hookyard(config, "jobs", "watch", "--source", "revid", "--job-id", "job_1",
                     "--deadline-s", "600", "--metadata", '{"order": 7}', "--json")
    again = hookyard(config, "jobs", "watch", "--source", "revid", "--job-id", "job_1", "--json")
    listed = hookyard(config, "jobs", "list", "--state", "watching", "--json")
    text = hookyard(config, "jobs", "list")
    assert first.returncode == 0, first.stderr
    made, repeat = json.loads(first.stdout), json.loads(again.stdout)
    assert made["new"] is True and repeat["new"] is False
    assert repeat["deadline_at"] == made["deadline_at"]  # the second call changed nothing
    [job] = json.loads(listed.stdout)
    assert job["job_id"] == "job_1" and job["metadata"] == {"order": 7}
    assert "revid" in text.stdout and "job_1" in text.stdout


def test_jobs_watch_refuses_what_cannot_be_polled(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text(CONFIG.format(db=tmp_path / "h.db"))
    no_key = hookyard(config, "jobs", "watch", "--source", "rendergrid", "--job-id", "c1")
    unknown = hookyard(config, "jobs", "watch", "--source", "nope", "--job-id", "c1")
    bad_meta = hookyard(config, "jobs", "watch", "--source", "revid", "--job-id", "c1",
                        "--metadata", "[1]")
    assert no_key.returncode == 2 and "api_key" in no_key.stderr
    assert unknown.returncode == 2 and "no source named 'nope'" in unknown.stderr
    assert bad_meta.returncode == 2 and "JSON object" in bad_meta.stderr
