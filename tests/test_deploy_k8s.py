"""The Kubernetes manifests in deploy/k8s: their config loads, their probes and selectors fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # PyYAML comes with schemathesis, a dev dependency

from receiver import settings
from receiver.store import display_url

K8S = Path(__file__).parent.parent / "deploy" / "k8s"


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if "metadata" in d}


def test_the_configmap_loads_with_the_secrets_environment(tmp_path: Path) -> None:
    found = manifests()
    config = tmp_path / "hookyard.toml"
    config.write_text(found[("ConfigMap", "hookyard")]["data"]["hookyard.toml"])
    env = found[("Secret", "hookyard")]["stringData"]
    loaded = settings.load(str(config), environ=env)
    assert loaded.server.database.startswith("postgresql://")
    assert "CHANGE-ME" not in display_url(loaded.server.database)


def test_web_pods_are_probed_and_served_and_the_worker_runs_the_worker_verb() -> None:
    found = manifests()
    web = found[("Deployment", "hookyard-web")]
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert web["spec"]["replicas"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = found[("Service", "hookyard")]
    assert (
        service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    )
    worker = found[("Deployment", "hookyard-worker")]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["hookyard", "worker"]
    kustomized = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(kustomized) == sorted(
        f.name for f in K8S.glob("*.yaml") if f.name != "kustomization.yaml"
    )
