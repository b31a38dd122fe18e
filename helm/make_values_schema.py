"""Generate helm/xalign/values.schema.json: the strict schema `helm install/template/lint` checks values with.

Every object the chart defines is closed (unknown keys fail). The Kubernetes structures passed through
as values (security contexts, tolerations, affinity, env entries, network-policy peers, ingress TLS) are
taken from the strict Kubernetes 1.32 schemas in ../shared/k8s-schemas, so a typo there fails at install
time too, not only on the API server.

    python helm/make_values_schema.py           # rewrite the schema
    python helm/make_values_schema.py --check   # exit 1 if the committed schema is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HELM_DIR = Path(__file__).resolve().parent
OUT = HELM_DIR / "xalign" / "values.schema.json"
K8S_VERSION = "1.32.0"

DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # a key of a Secret's data
BOOL = {"type": "boolean"}
NON_NEGATIVE = {"type": "integer", "minimum": 0}
# Key patterns go in patternProperties: helm misreports where a propertyNames error is.
RAY_START_PARAMS = {
    "description": "Arguments of `ray start` (dashed names); KubeRay takes strings only.",
    "type": "object",
    "patternProperties": {"^[a-z][a-z0-9-]*$": {"type": "string"}},
    "additionalProperties": False,
}


def k8s_schemas_dir() -> Path:
    env = os.environ.get("XALIGN_K8S_SCHEMAS")
    return Path(env) if env else HELM_DIR.parent.parent / "shared" / "k8s-schemas"


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _clean(node: Any) -> Any:
    """Drop the Kubernetes vendor keys and `format` (annotations only) from an imported schema."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if not k.startswith("x-kubernetes") and k != "format"}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def kubernetes_definitions(root: Path) -> dict[str, Any]:
    core = root / f"v{K8S_VERSION}-standalone-strict"
    pod = json.loads((core / "pod-v1.json").read_text())["properties"]["spec"]["properties"]
    container = pod["containers"]["items"]["properties"]
    netpol = json.loads((core / "networkpolicy-networking-v1.json").read_text())
    ingress = json.loads((core / "ingress-networking-v1.json").read_text())
    return _clean({
        "k8sPodSecurityContext": pod["securityContext"],
        "k8sSecurityContext": container["securityContext"],
        "k8sTolerations": pod["tolerations"],
        "k8sAffinity": pod["affinity"],
        "k8sEnv": container["env"],
        "k8sImagePullSecrets": pod["imagePullSecrets"],
        "k8sPeers": netpol["properties"]["spec"]["properties"]["ingress"]["items"]["properties"]["from"],
        "k8sIngressTls": ingress["properties"]["spec"]["properties"]["tls"],
    })


def build_schema(root: Path) -> dict[str, Any]:
    definitions: dict[str, Any] = {
        **kubernetes_definitions(root),
        "quantity": {
            "description": "A Kubernetes quantity such as 500m, 4, 16Gi.",
            "type": ["string", "number"],
            "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
        },
        "resources": obj({"cpu": ref("quantity"), "memory": ref("quantity")}, ["cpu", "memory"],
                         description="Requests = limits: cpu and memory of each pod."),
        "stringMap": {"type": "object", "additionalProperties": {"type": "string"}},
        "runtimeEnv": obj({
            "env_vars": ref("stringMap"),
            "working_dir": string(),
            "py_modules": {"type": "array", "items": string()},
            "pip": {"type": ["array", "object", "string"]},
            "uv": {"type": ["array", "object", "string"]},
            "conda": {"type": ["object", "string"]},
            "excludes": {"type": "array", "items": string()},
            "image_uri": string(),
            "py_executable": string(),
            "config": {"type": "object"},
        }, description="A Ray runtime environment (rendered as the RayJob's runtimeEnvYAML)."),
        "runId": string(pattern="^([a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?)?$", maxLength=8,
                        description="Appended to the RayJob name: lowercase letters, digits and '-', at most 8."),
        "jobCluster": {"enum": ["", "shared", "own"]},
        "recipeName": string(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
                             description="A recipe under recipes/ (name or path)."),
        "overrides": {"type": "array",
                      "items": string(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*=", description="key.sub=value")},
    }
    placement = {"nodeSelector": ref("stringMap"), "tolerations": ref("k8sTolerations"), "affinity": ref("k8sAffinity")}

    def worker_group(gpu: bool) -> dict[str, Any]:
        resources = ref("resources")
        if gpu:
            resources = obj({"cpu": ref("quantity"), "memory": ref("quantity"),
                             "gpu": {"type": "integer", "minimum": 1, "description": "GPUs per worker pod."}},
                            ["cpu", "memory"])
        props: dict[str, Any] = {
            "enabled": BOOL, "groupName": string(pattern=DNS_LABEL, maxLength=40),
            "replicas": NON_NEGATIVE, "minReplicas": NON_NEGATIVE, "maxReplicas": NON_NEGATIVE,
            "resources": resources, "rayStartParams": RAY_START_PARAMS, **placement,
        }
        if gpu:
            props["gpuResourceName"] = string(pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$")
        group = obj(props, list(props))
        if gpu:  # a GPU group without a GPU count would schedule CPU-only pods
            group["if"] = {"properties": {"enabled": {"const": True}}}
            group["then"] = {"properties": {"resources": {"required": ["gpu"]}}}
        return group

    def job(extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
        props = {"enabled": BOOL, "runId": ref("runId"), "cluster": ref("jobCluster"), **extra,
                 "overrides": ref("overrides"), "runtimeEnv": ref("runtimeEnv")}
        return obj(props, ["enabled", "runId", "cluster", *required, "overrides"])

    storage = obj({
        "kind": {"enum": ["claim", "s3"],
                 "description": "claim: a shared PersistentVolumeClaim (pvc); s3: an S3-compatible object store (s3)."},
        "mountPath": string(pattern="^/[^:]*$"),
        "pvc": obj({
            "enabled": BOOL, "create": BOOL, "existingClaim": string(), "size": ref("quantity"),
            "storageClassName": string(),
            "accessModes": {"type": "array", "minItems": 1, "items": {
                "enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}},
        }, ["enabled", "create", "existingClaim", "size", "accessModes"]),
        "uri": string(pattern="^([a-z][a-z0-9+.-]*://.+)?$"),
        "dataDir": string(pattern="^[^/].*$", minLength=1),
        "cacheDir": string(pattern="^[^/].*$", minLength=1),
        "s3": obj({
            # S3 bucket naming rules; empty is allowed here and refused below when kind is s3.
            "bucket": string(pattern=r"^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])?$", maxLength=63),
            "prefix": string(pattern=r"^([^/\s]+(/[^/\s]+)*)?$",
                             description="Key prefix without leading or trailing '/' (empty: the bucket's root)."),
            "endpoint": string(pattern=r"^(https?://[^\s/]+(/[^\s]*)?)?$",
                               description="Empty: AWS S3; else an S3-compatible endpoint URL (AWS_ENDPOINT_URL)."),
            "region": string(pattern=r"^[a-z0-9][a-z0-9-]*$"),
            "credentialsSecret": string(pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", maxLength=253,
                                        description="An existing Secret with the access key id and secret key."),
            "accessKeyIdKey": string(pattern=SECRET_KEY),
            "secretAccessKeyKey": string(pattern=SECRET_KEY),
            "cacheSize": ref("quantity"),
        }, ["bucket", "prefix", "endpoint", "region", "credentialsSecret", "accessKeyIdKey", "secretAccessKeyKey",
            "cacheSize"]),
    }, ["kind", "mountPath", "pvc", "uri", "dataDir", "cacheDir", "s3"])
    # kind s3 needs a bucket and the Secret with its credentials (helm names the empty field).
    storage["if"] = {"properties": {"kind": {"const": "s3"}}}
    storage["then"] = {"properties": {"s3": {"properties": {"bucket": {"minLength": 1},
                                                            "credentialsSecret": {"minLength": 1}}}}}

    properties: dict[str, Any] = {
        "global": {"type": "object"},
        "nameOverride": string(pattern="^([a-z]([-a-z0-9]*[a-z0-9])?)?$", maxLength=28),
        "fullnameOverride": string(pattern="^([a-z]([-a-z0-9]*[a-z0-9])?)?$", maxLength=28),
        "image": obj({
            "repository": string(minLength=1), "tag": string(), "variant": {"enum": ["cpu", "gpu"]},
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            "pullSecrets": ref("k8sImagePullSecrets"),
        }, ["repository", "tag", "variant", "pullPolicy"]),
        "ray": obj({
            "version": string(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$"),
            "auth": obj({"mode": {"enum": ["token", "disabled"]}}, ["mode"]),
        }, ["version", "auth"]),
        "serviceAccount": obj({"create": BOOL, "name": string(), "annotations": ref("stringMap")},
                              ["create", "name"]),
        "podSecurityContext": ref("k8sPodSecurityContext"),
        "securityContext": ref("k8sSecurityContext"),
        "podLabels": ref("stringMap"),
        "podAnnotations": ref("stringMap"),
        "priorityClassName": string(),
        "storage": storage,
        "env": {"type": "object", "additionalProperties": False,
                "patternProperties": {"^[A-Za-z_][A-Za-z0-9_]*$": {"type": ["string", "number", "boolean"]}}},
        "extraEnv": ref("k8sEnv"),
        "secrets": obj({
            "existingSecret": string(), "apiKeyKey": string(minLength=1), "hubTokenKey": string(minLength=1),
            "create": BOOL, "apiKey": string(), "hubToken": string(),
        }, ["existingSecret", "apiKeyKey", "hubTokenKey", "create"]),
        "hub": obj({"offline": BOOL}, ["offline"]),
        "head": obj({"resources": ref("resources"), "rayStartParams": RAY_START_PARAMS, **placement},
                    ["resources", "rayStartParams"]),
        "workers": obj({"cpu": worker_group(False), "gpu": worker_group(True)}, ["cpu", "gpu"]),
        "autoscaling": obj({
            "enabled": BOOL, "version": {"enum": ["v1", "v2"]},
            "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
            "idleTimeoutSeconds": NON_NEGATIVE, "resources": ref("resources"),
        }, ["enabled", "version", "upscalingMode", "idleTimeoutSeconds", "resources"]),
        "cluster": obj({"enabled": BOOL}, ["enabled"]),
        "serve": obj({
            "enabled": BOOL,
            # NewClusterWithIncrementalUpgrade needs the Gateway API; the chart does not set it up.
            "upgradeStrategy": {"enum": ["NewCluster", "None"]},
            "app": obj({
                "name": string(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"),
                "routePrefix": string(pattern="^/"),
                "importPath": string(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"),
                "deploymentName": string(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$"),
                "recipe": ref("recipeName"),
                "model": string(minLength=1),
                "adapters": {"type": "object", "additionalProperties": False,
                             "patternProperties": {r"^[A-Za-z0-9][A-Za-z0-9._-]*$": string(minLength=1)}},
                "numReplicas": {"type": "integer", "minimum": 1},
                "autoscaling": obj({
                    "enabled": BOOL, "minReplicas": NON_NEGATIVE, "maxReplicas": {"type": "integer", "minimum": 1},
                    "targetOngoingRequests": {"type": "number", "exclusiveMinimum": 0},
                }, ["enabled", "minReplicas", "maxReplicas", "targetOngoingRequests"]),
                "actor": obj({"numCpus": {"type": "number", "minimum": 0},
                              "numGpus": {"type": "number", "minimum": 0}}, ["numCpus", "numGpus"]),
                "overrides": ref("overrides"),
            }, ["name", "routePrefix", "importPath", "deploymentName", "recipe", "model", "numReplicas",
                "autoscaling", "actor", "overrides"]),
            "cors": obj({"allowOrigins": {"type": "array", "items": string(pattern=r"^(\*|https?://[^,\s]+)$")}},
                        ["allowOrigins"]),
            "auth": obj({"required": BOOL}, ["required"]),
            "proxyRequestTimeoutS": {"type": "number", "exclusiveMinimum": 0},
            "service": obj({
                "enabled": BOOL, "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535}, "annotations": ref("stringMap"),
            }, ["enabled", "type", "port"]),
            "ingress": obj({
                "enabled": BOOL, "className": string(), "annotations": ref("stringMap"), "host": string(),
                "path": string(pattern="^/"), "pathType": {"enum": ["Prefix", "Exact", "ImplementationSpecific"]},
                "tls": ref("k8sIngressTls"),
            }, ["enabled", "path", "pathType"]),
        }, ["enabled", "upgradeStrategy", "app", "cors", "auth", "proxyRequestTimeoutS", "service", "ingress"]),
        "jobs": obj({
            "cluster": {"enum": ["shared", "own"]},
            # SidecarMode cannot use clusterSelector or a submitter template; InteractiveMode runs nothing.
            "submissionMode": {"enum": ["K8sJobMode", "HTTPMode"]},
            "shutdownAfterJobFinishes": BOOL,
            "ttlSecondsAfterFinished": NON_NEGATIVE,
            "backoffLimit": NON_NEGATIVE,
            "submitterBackoffLimit": NON_NEGATIVE,
            "activeDeadlineSeconds": NON_NEGATIVE,
            "runtimeEnv": ref("runtimeEnv"),
            "submitter": obj({"resources": ref("resources")}, ["resources"]),
            "prepare": job({"recipe": ref("recipeName")}, ["recipe"]),
            "train": job({"recipe": ref("recipeName"), "resume": string()}, ["recipe", "resume"]),
            "evaluate": job({"suite": ref("recipeName"), "model": string(minLength=1), "output": string(),
                             "endpoint": string(pattern="^(https?://[^\\s]+)?$")},
                            ["suite", "model", "output", "endpoint"]),
        }, ["cluster", "submissionMode", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "backoffLimit",
            "submitterBackoffLimit", "activeDeadlineSeconds", "submitter", "prepare", "train", "evaluate"]),
        "networkPolicy": obj({
            "enabled": BOOL, "operatorNamespace": string(pattern=DNS_LABEL, maxLength=63),
            "apiFrom": ref("k8sPeers"), "metricsFrom": ref("k8sPeers"),
        }, ["enabled", "operatorNamespace"]),
        "tests": obj({"enabled": BOOL}, ["enabled"]),
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "xalign Helm chart values",
        "type": "object",
        "additionalProperties": False,
        "required": [k for k in properties if k != "global"],
        "properties": properties,
        "definitions": definitions,
    }


def render(root: Path) -> str:
    return json.dumps(build_schema(root), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed schema instead")
    args = parser.parse_args(argv)
    root = k8s_schemas_dir()
    if not root.is_dir():
        print(f"k8s-schemas not found at {root} (set XALIGN_K8S_SCHEMAS)", file=sys.stderr)
        return 2
    text = render(root)
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT.relative_to(HELM_DIR.parent)} is out of date: run python helm/make_values_schema.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(HELM_DIR.parent)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
