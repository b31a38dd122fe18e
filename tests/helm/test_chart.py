"""The chart lints, renders and validates offline: strict KubeRay v1.7 / Kubernetes 1.32 schemas, the
operator's own static rules, the chart's values schema, and the hardening the chart promises."""

from __future__ import annotations

import base64
import re
import secrets
import shlex
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from helm_render import CHART, LINT_SETS, VALUE_SETS, Helm, cluster_specs, load_module, pod_specs

from cluster.locations import REPO_ROOT


def test_values_schema_is_generated_from_the_k8s_schemas(k8s_schemas: Path) -> None:
    generator = load_module("make_values_schema", REPO_ROOT / "helm" / "make_values_schema.py")
    committed = (CHART / "values.schema.json").read_text()
    assert generator.render(k8s_schemas) == committed, "run: python helm/make_values_schema.py"


def test_every_value_file_is_linted_and_rendered() -> None:
    shipped = {p.name for p in CHART.glob("values-*.yaml")}
    linted = {Path(arg).name for name in LINT_SETS for arg in VALUE_SETS[name] if arg.endswith(".yaml")}
    assert shipped == linted, "add the value file to LINT_SETS/VALUE_SETS in tests/helm/helm_render.py"


@pytest.mark.parametrize("name", LINT_SETS)
def test_lint_strict(helm: Helm, name: str) -> None:
    proc = helm.run("lint", "--strict", str(CHART), *VALUE_SETS[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_document_validates(helm: Helm, validate_manifests: ModuleType, k8s_schemas: Path,
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    rendered = helm.render(name)
    assert rendered.docs, f"{name}: the chart rendered nothing"
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.text)
    # No --allow-missing: a kind without a schema is a failure too.
    rc = validate_manifests.main([str(k8s_schemas), "--k8s-version", "1.32.0", str(out)])
    report = capsys.readouterr().out
    assert rc == 0, report
    assert f"{len(rendered.docs)} documents, 0 invalid" in report


def test_value_sets_render_what_they_promise(helm: Helm) -> None:
    kinds = {name: sorted({d["kind"] for d in helm.render(name).docs}) for name in VALUE_SETS}
    assert {"RayCluster", "RayService", "Service", "PersistentVolumeClaim"} <= set(kinds["defaults"])
    assert "RayJob" not in kinds["defaults"], "installing the defaults must not start a pipeline stage"
    assert "RayService" not in kinds["jobs-only"] and "RayJob" in kinds["jobs-only"]
    jobs = {d["metadata"]["name"] for d in helm.render("jobs-only-all-stages").of_kind("RayJob")}
    assert jobs == {"xa-xalign-prepare", "xa-xalign-train", "xa-xalign-evaluate"}
    assert "RayCluster" not in kinds["jobs-own-clusters"]
    assert {"Ingress", "NetworkPolicy"} <= set(kinds["ci"])
    assert {"RayCluster", "RayService"} <= set(kinds["s3"]) and "RayJob" not in kinds["s3"]
    for name in ("s3", "s3-all-stages"):
        assert "PersistentVolumeClaim" not in kinds[name], f"{name}: artifacts live in the bucket, not on a claim"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pods_are_hardened(helm: Helm, name: str) -> None:
    """Non-root, no privilege escalation, read-only root fs, requests = limits, /tmp/ray on an emptyDir."""
    checked = 0
    for doc in helm.render(name).docs:
        for where, role, pod in pod_specs(doc):
            checked += 1
            psc = pod["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, where
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
                assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
                assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
                res = c["resources"]
                assert res["requests"] == res["limits"], (where, c["name"], res)
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                for path in ("/tmp/ray", "/tmp", "/home/xalign"):
                    assert path in mounts and "emptyDir" in volumes[mounts[path]], (where, path)
            if role == "worker":
                assert pod["automountServiceAccountToken"] is False, where
        for where, spec in cluster_specs(doc):
            # Only the head talks to the Kubernetes API, and only for the autoscaler sidecar.
            head = spec["headGroupSpec"]["template"]["spec"]
            assert head["automountServiceAccountToken"] is spec["enableInTreeAutoscaling"], where
            auto = spec.get("autoscalerOptions")
            if auto:
                assert auto["resources"]["requests"] == auto["resources"]["limits"], where
                assert auto["securityContext"]["readOnlyRootFilesystem"] is True, where
                head_volumes = {v["name"]: v for v in head["volumes"]}
                for m in auto["volumeMounts"]:  # writable places from the head pod's emptyDirs
                    assert "emptyDir" in head_volumes[m["name"]], (where, m)
                assert {m["mountPath"] for m in auto["volumeMounts"]} == {"/tmp", "/home/xalign"}, where
    assert checked, f"{name}: no pod templates found"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_ray_pods_share_storage_and_env(helm: Helm, name: str) -> None:
    for doc in helm.render(name).docs:
        for where, role, pod in pod_specs(doc):
            if role not in ("head", "worker"):
                continue
            (c,) = pod["containers"]
            env = {e["name"]: e for e in c["env"]}
            assert c["workingDir"] == "/mnt/xalign", where
            assert env["XALIGN_DATA"]["value"] == "/mnt/xalign/data", where
            assert env["XALIGN_CACHE"]["value"] == "/mnt/xalign/cache", where
            assert env["TORCH_EXTENSIONS_DIR"]["value"].startswith("/mnt/xalign/cache/"), where
            if name.startswith("s3"):  # no claim: node-local scratch and a sized cache at XALIGN_CACHE
                volumes = {v["name"]: v for v in pod["volumes"]}
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert "storage" not in volumes and not any("persistentVolumeClaim" in v for v in volumes.values())
                assert volumes[mounts["/mnt/xalign"]]["emptyDir"] == {}, where
                assert volumes[mounts["/mnt/xalign/cache"]]["emptyDir"] == {"sizeLimit": "100Gi"}, where
                assert env["XALIGN_ARTIFACTS"]["value"] == "s3://xalign-artifacts/team-a", where
                continue
            assert "XALIGN_ARTIFACTS" not in env, where
            storage = next(v for v in pod["volumes"] if v["name"] == "storage")
            if name == "minimal":
                assert "emptyDir" in storage and env["XALIGN_STORAGE_URI"]["value"] == "s3://bucket/xalign"
            else:
                claim = storage["persistentVolumeClaim"]["claimName"]
                pvcs = {d["metadata"]["name"] for d in helm.render(name).of_kind("PersistentVolumeClaim")}
                assert claim in pvcs, (where, claim, pvcs)


S3_ENV = {
    "XALIGN_ARTIFACTS": {"value": "s3://xalign-artifacts/team-a"},
    "AWS_ENDPOINT_URL": {"value": "http://minio.minio:9000"},
    "AWS_REGION": {"value": "us-east-1"},
    "AWS_DEFAULT_REGION": {"value": "us-east-1"},
    "AWS_ACCESS_KEY_ID": {"valueFrom": {"secretKeyRef": {"name": "xalign-s3", "key": "AWS_ACCESS_KEY_ID"}}},
    "AWS_SECRET_ACCESS_KEY": {"valueFrom": {"secretKeyRef": {"name": "xalign-s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
}
CLAIM_ONLY = set(S3_ENV)


def _containers(rendered_docs: list[dict]) -> list[tuple[str, str, dict]]:
    """(where, role, container) for every container of every pod (head, worker, submitter, test pod)."""
    return [(f"{where} {c['name']}", role, c) for doc in rendered_docs for where, role, pod in pod_specs(doc)
            for c in pod["containers"]]


@pytest.mark.parametrize("name", ["defaults", "jobs-only-all-stages", "ci", "minimal"])
def test_claim_storage_is_unchanged(helm: Helm, name: str) -> None:
    """storage.kind defaults to claim: no object-store environment anywhere, the claim (when enabled) mounted."""
    rendered = helm.render(name)
    assert not any(n in rendered.text for n in CLAIM_ONLY), f"{name}: object-store settings in a claim render"
    for where, role, c in _containers(rendered.docs):
        if role == "submitter":
            assert "env" not in c, where  # as before object storage existed
    if name != "minimal":
        (pvc,) = rendered.of_kind("PersistentVolumeClaim")
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("name", ["s3", "s3-all-stages"])
def test_s3_storage_reaches_every_ray_container(helm: Helm, kuberay_checks: ModuleType, name: str) -> None:
    """Head, workers, serving and job submitters get the bucket and its credentials (from the Secret only);
    no claim is created or mounted."""
    rendered = helm.render(name)
    assert "persistentVolumeClaim" not in rendered.text and not rendered.of_kind("PersistentVolumeClaim")
    roles = set()
    for where, role, c in _containers(rendered.docs):
        if role == "pod":  # the `helm test` pod only calls the API
            continue
        roles.add(role)
        env = {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in c["env"]}
        assert {k: env.get(k) for k in S3_ENV} == S3_ENV, where
        names = [e["name"] for e in c["env"]]
        assert len(names) == len(set(names)), (where, names)
    assert roles == ({"head", "worker", "submitter"} if name == "s3-all-stages" else {"head", "worker"}), roles
    kinds = {d["kind"] for d in rendered.docs}
    assert ("RayJob" in kinds) is (name == "s3-all-stages") and {"RayCluster", "RayService"} <= kinds
    for doc in rendered.docs:
        if doc["apiVersion"] == "ray.io/v1":
            assert kuberay_checks.check(doc) == [], doc["metadata"]["name"]


def test_s3_on_aws_without_endpoint_or_prefix(helm: Helm) -> None:
    proc = helm.template("--set", "storage.kind=s3", "--set", "storage.s3.bucket=my-bucket",
                         "--set", "storage.s3.prefix=", "--set", "storage.s3.region=eu-central-1",
                         "--set", "storage.s3.credentialsSecret=aws-creds",
                         "--set", "storage.s3.accessKeyIdKey=id", "--set", "storage.s3.secretAccessKeyKey=secret",
                         "--set", "jobs.train.enabled=true")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert "AWS_ENDPOINT_URL" not in proc.stdout and "PersistentVolumeClaim" not in proc.stdout
    for where, role, c in _containers(docs):
        if role == "pod":
            continue
        env = {e["name"]: e for e in c["env"]}
        assert env["XALIGN_ARTIFACTS"]["value"] == "s3://my-bucket", where
        assert env["AWS_REGION"]["value"] == env["AWS_DEFAULT_REGION"]["value"] == "eu-central-1", where
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "aws-creds", "key": "id"}, where
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "aws-creds", "key": "secret"}
    (train,) = [d for d in docs if d["kind"] == "RayJob"]
    assert train["spec"]["entrypoint"].endswith(" checkpoint.storage=s3://my-bucket/checkpoints")


def test_s3_artifact_arguments_point_into_the_bucket(helm: Helm) -> None:
    """The chart's own artifact arguments: checkpoints under XALIGN_ARTIFACTS, a relative --output and a --resume
    under the mount path become URIs (with a claim they stay as given)."""
    jobs = {j["metadata"]["labels"]["app.kubernetes.io/component"]: shlex.split(j["spec"]["entrypoint"])
            for j in helm.render("s3-all-stages").of_kind("RayJob")}
    root = "s3://xalign-artifacts/team-a"
    assert jobs["job-prepare"] == ["xalign", "prepare", "--recipe", "bayling2-mini"]
    assert jobs["job-train"] == ["xalign", "train", "--recipe", "train-lora-gemma-mini", "--resume",
                                 f"{root}/outputs/runs/previous run", f"checkpoint.storage={root}/checkpoints"]
    assert jobs["job-evaluate"][-2:] == ["--output", f"{root}/outputs/reports/s3"]
    ci = {j["metadata"]["labels"]["app.kubernetes.io/component"]: shlex.split(j["spec"]["entrypoint"])
          for j in helm.render("ci").of_kind("RayJob")}
    assert ci["job-train"][4:7] == ["--resume", "outputs/runs/previous run",
                                    "checkpoint.storage=s3://xalign-ci/artifacts/checkpoints"]
    assert ci["job-evaluate"][ci["job-evaluate"].index("--output") + 1] == "outputs/reports/ci"

    def entrypoint(*args: str) -> list[str]:
        proc = helm.template("-f", str(CHART / "values-s3.yaml"), "--set", "jobs.train.enabled=true",
                             "--set", "jobs.evaluate.enabled=true", *args)
        assert proc.returncode == 0, proc.stderr
        return [shlex.split(d["spec"]["entrypoint"]) for d in yaml.safe_load_all(proc.stdout)
                if d and d["kind"] == "RayJob"]

    # storage.uri still names where checkpoints go; URIs and absolute paths off the mount stay as given.
    train, evaluate = entrypoint("--set", "storage.uri=s3://other/ckpt/", "--set", "jobs.train.resume=s3://old/run",
                                 "--set", "jobs.evaluate.output=/scratch/reports")
    assert train[-3:] == ["--resume", "s3://old/run", "checkpoint.storage=s3://other/ckpt/checkpoints"]
    assert evaluate[-2:] == ["--output", "/scratch/reports"]
    train, evaluate = entrypoint("--set", "jobs.train.resume=./outputs/runs/r1/",
                                 "--set", "jobs.evaluate.output=/mnt/xalign")
    assert train[-2] == f"{root}/outputs/runs/r1"
    assert evaluate[-2:] == ["--output", root]


def test_gpu_worker_group(helm: Helm) -> None:
    for doc in helm.render("gpu").docs:
        for where, spec in cluster_specs(doc):
            groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
            gpu = groups["gpu"]
            assert gpu["minReplicas"] == 0, where
            pod = gpu["template"]["spec"]
            (c,) = pod["containers"]
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "1", where
            assert c["resources"]["requests"] == c["resources"]["limits"], where
            assert c["image"].endswith(":0.1.0-gpu"), where
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert "nvidia.com/gpu" not in str(groups["cpu"]), where
            assert spec["enableInTreeAutoscaling"] is True
    serve = yaml.safe_load(helm.render("gpu").one("RayService")["spec"]["serveConfigV2"])
    overrides = serve["applications"][0]["args"]["overrides"]
    assert {"deployment.num_cpus=4", "deployment.num_gpus=1"} <= set(overrides)
    assert not helm.render("gpu").of_kind("RayJob"), "the GPU value file enables no job by itself"


def test_jobs_shared_and_own_clusters(helm: Helm, kuberay_checks: ModuleType) -> None:
    cluster = helm.render("jobs-only-all-stages").one("RayCluster")["metadata"]["name"]
    for job in helm.render("jobs-only-all-stages").of_kind("RayJob"):
        spec = job["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster}
        assert spec["shutdownAfterJobFinishes"] is False and "ttlSecondsAfterFinished" not in spec
        assert spec["submissionMode"] == "K8sJobMode" and spec["submitterConfig"]["backoffLimit"] == 2
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    for job in helm.render("jobs-own-clusters").of_kind("RayJob"):
        spec = job["spec"]
        assert "clusterSelector" not in spec and spec["rayClusterSpec"]["headGroupSpec"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 3600
        assert spec["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in spec
        assert kuberay_checks.check(job) == []
    ci = {j["metadata"]["name"]: j["spec"] for j in helm.render("ci").of_kind("RayJob")}
    assert ci["xalign-ci-train-r1"]["ttlSecondsAfterFinished"] == 600
    assert yaml.safe_load(ci["xalign-ci-train-r1"]["runtimeEnvYAML"])["env_vars"] == {
        "OMP_NUM_THREADS": "8", "PYTHONUNBUFFERED": "1", "XALIGN_LOG_LEVEL": "info"}
    assert ci["xalign-ci-evaluate-r1"]["activeDeadlineSeconds"] == 86400


def test_serve_service_ingress_and_network_policy(helm: Helm) -> None:
    ci = helm.render("ci")
    svc = ci.one("Service")
    assert svc["spec"]["selector"]["ray.io/serve"] == "true"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "serve"
    serve_pod = ci.one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    for k, v in svc["spec"]["selector"].items():
        assert k == "ray.io/serve" or serve_pod["metadata"]["labels"][k] == v, k
    ports = {p["name"]: p["containerPort"] for p in serve_pod["spec"]["containers"][0]["ports"]}
    assert ports["serve"] == 8000 and svc["spec"]["ports"][0]["targetPort"] == "serve"
    ing = ci.one("Ingress")["spec"]
    assert ing["rules"][0]["host"] == "xalign.example.com"
    assert ing["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == svc["metadata"]["name"]
    env = {e["name"]: e for e in serve_pod["spec"]["containers"][0]["env"]}
    assert env["XALIGN_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "xalign-ci-secrets", "key": "api-key", "optional": True}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "hf-token"
    # CORS and fail-closed auth are serve-recipe settings, passed as overrides in the Serve app's args.
    args = yaml.safe_load(ci.one("RayService")["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert 'http.cors_origins=["https://translate.example.com"]' in args["overrides"]
    assert "auth.required=true" in args["overrides"]
    assert args["overrides"][-1] == "limits.max_batch_items=16", "user overrides come last so they win"
    np = ci.one("NetworkPolicy")["spec"]
    operator = next(r for r in np["ingress"] if any("namespaceSelector" in f for f in r.get("from", []))
                    and {p["port"] for p in r.get("ports", [])} == {8265, 52365})
    assert operator["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ray-system"}
    assert any({p["port"] for p in r.get("ports", [])} == {8000} for r in np["ingress"])


def test_install_dry_run_prints_the_notes(helm: Helm, tmp_path: Path) -> None:
    """`helm install --dry-run=client` renders NOTES.txt too, offline (no API server, no kubeconfig)."""
    proc = helm.run("install", "xalign", str(CHART), "-n", "ml", "--dry-run=client",
                    *VALUE_SETS["jobs-only"], "--set", "serve.enabled=true",
                    env={"KUBECONFIG": str(tmp_path / "no-kubeconfig")})
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl get raycluster xalign -n ml" in notes
    assert "svc/xalign-head-svc 8265" in notes
    assert "kubectl get rayservice xalign-serve -n ml" in notes and "svc/xalign-api 8000" in notes
    assert "app.kubernetes.io/component=job-prepare" in notes
    assert "Artifacts" not in notes
    proc = helm.run("install", "xalign", str(CHART), "-n", "ml", "--dry-run=client", *VALUE_SETS["s3"],
                    env={"KUBECONFIG": str(tmp_path / "no-kubeconfig")})
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert ("Artifacts (datasets, checkpoints, exports, reports): s3://xalign-artifacts/team-a via "
            "http://minio.minio:9000, credentials from Secret xalign-s3.") in notes


def test_chart_created_secret_carries_the_api_key(helm: Helm) -> None:
    key = secrets.token_hex(16)
    proc = helm.template("--set", "secrets.create=true", "--set-string", f"secrets.apiKey={key}")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["api-key"]).decode() == key
    assert key not in proc.stdout, "the key must only appear base64-encoded in the Secret"
    serve = next(d for d in docs if d["kind"] == "RayService")
    env = {e["name"]: e for e in serve["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["XALIGN_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    defaults = helm.render("defaults").text
    assert "XALIGN_API_KEY" not in defaults and "kind: Secret" not in defaults


# Shapes of real credentials (Hugging Face, OpenAI-style, AWS, GitHub tokens, PEM private keys).
CREDENTIAL_PATTERNS = re.compile(r"hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}"
                                 r"|-----BEGIN [A-Z ]*PRIVATE KEY-----")
# Keys whose value would be the credential itself (not the name of a variable or Secret key holding it).
CREDENTIAL_KEYS = re.compile(r"^(api[_-]?key|hub[_-]?token|token|password|passwd|secret|hf[_-]?token)$", re.I)


def _credential_values(node: object, where: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if CREDENTIAL_KEYS.match(str(key)) and isinstance(value, str) and value:
                found.append(f"{where}.{key}")
            found += _credential_values(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _credential_values(value, f"{where}[{i}]")
    return found


def test_no_secrets_in_values_or_recipes() -> None:
    """Credentials come from an existing Secret at install time: no value file or recipe carries one."""
    files = sorted(CHART.glob("values*.yaml")) + sorted((REPO_ROOT / "recipes").glob("*.yaml"))
    assert len(files) > 4, files
    for path in files:
        text = path.read_text()
        assert not CREDENTIAL_PATTERNS.search(text), f"{path.relative_to(REPO_ROOT)}: looks like a credential"
        assert not _credential_values(yaml.safe_load(text)), f"{path.relative_to(REPO_ROOT)}: a credential value"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["secrets"]
    assert defaults["create"] is False and defaults["existingSecret"] == ""
    # The check itself finds what it looks for.
    assert _credential_values({"secrets": {"apiKey": "abc"}}) == [".secrets.apiKey"]
    assert CREDENTIAL_PATTERNS.search("token: hf_" + "a1" * 17)


def test_long_release_names_stay_within_kuberay_limits(helm: Helm, kuberay_checks: ModuleType) -> None:
    release = "team.a-release-name-much-longer-than-kuberay-allows"  # 50 characters, a dot
    proc = helm.template(*VALUE_SETS["jobs-only-all-stages"], "--set", "serve.enabled=true",
                         "--set", "jobs.evaluate.runId=rerun-12", release=release)
    assert proc.returncode == 0, proc.stderr
    ray_docs = [d for d in yaml.safe_load_all(proc.stdout) if d and d["apiVersion"] == "ray.io/v1"]
    assert len(ray_docs) == 5
    for doc in ray_docs:
        assert kuberay_checks.check(doc) == [], doc["metadata"]["name"]


BAD_VALUES = [
    ("negative-replicas", ["--set", "workers.cpu.replicas=-1"], "at '/workers/cpu/replicas': minimum: got -1"),
    ("negative-max", ["--set", "workers.gpu.maxReplicas=-2"], "at '/workers/gpu/maxReplicas': minimum"),
    ("unknown-top-key", ["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
    ("unknown-nested-key", ["--set", "serve.app.replicas=3"], "additional properties 'replicas' not allowed"),
    ("gpu-without-count", ["--set", "workers.gpu.enabled=true"], "at '/workers/gpu/resources': missing property 'gpu'"),
    ("gpu-count-zero", ["--set", "workers.gpu.enabled=true", "--set", "workers.gpu.resources.gpu=0"],
     "at '/workers/gpu/resources/gpu': minimum: got 0, want 1"),
    ("ray-start-param-not-string", ["--set", "head.rayStartParams.num-cpus=0"],
     "at '/head/rayStartParams/num-cpus': got number, want string"),
    ("ray-start-param-key", ["--set-string", "head.rayStartParams.Num_CPUs=1"],
     "at '/head/rayStartParams': additional properties 'Num_CPUs' not allowed"),
    ("ray-start-labels", ["--set-string", "workers.cpu.rayStartParams.labels=a=b"],
     'workers.cpu.rayStartParams: "labels" is set by KubeRay'),
    ("bad-cpu-quantity", ["--set", "head.resources.cpu=two"], "at '/head/resources/cpu'"),
    ("bad-job-mode", ["--set", "jobs.cluster=elsewhere"], "at '/jobs/cluster'"),
    ("sidecar-mode", ["--set", "jobs.submissionMode=SidecarMode"], "at '/jobs/submissionMode'"),
    ("bad-run-id", ["--set", "jobs.train.runId=Run_1"], "at '/jobs/train/runId'"),
    ("bad-override", ["--set", "jobs.train.enabled=true", "--set", "jobs.train.overrides[0]=--lr"],
     "at '/jobs/train/overrides/0'"),
    ("bad-import-path", ["--set", "serve.app.importPath=serving/app.py"], "at '/serve/app/importPath'"),
    ("zero-serve-replicas", ["--set", "serve.app.numReplicas=0"], "at '/serve/app/numReplicas': minimum"),
    ("long-fullname", ["--set", "fullnameOverride=an-xalign-release-name-too-long"], "at '/fullnameOverride'"),
    ("incremental-upgrade", ["--set", "serve.upgradeStrategy=NewClusterWithIncrementalUpgrade"],
     "at '/serve/upgradeStrategy'"),
    ("min-over-max", ["--set", "workers.cpu.minReplicas=5"], "workers.cpu: minReplicas (5) must not exceed"),
    ("replicas-outside-range", ["--set", "workers.cpu.replicas=9"], "workers.cpu: replicas (9) must lie between"),
    ("same-group-names", ["-f", str(CHART / "values-gpu.yaml"), "--set", "workers.gpu.groupName=cpu"],
     "workers.cpu.groupName and workers.gpu.groupName must differ"),
    ("shared-jobs-without-cluster", ["--set", "cluster.enabled=false", "--set", "jobs.prepare.enabled=true"],
     "jobs.prepare runs on the shared RayCluster"),
    ("typo-in-security-context", ["--set", "securityContext.readOnlyRootFileSystem=true"],
     "at '/securityContext': additional properties 'readOnlyRootFileSystem' not allowed"),
    ("typo-in-toleration", ["--set", "workers.gpu.tolerations[0].keyy=x"],
     "at '/workers/gpu/tolerations/0': additional properties 'keyy' not allowed"),
    ("auth-required-without-key", ["--set", "serve.auth.required=true"],
     "serve.auth.required needs the API key"),
    ("bad-cors-origin", ["--set", "serve.cors.allowOrigins[0]=example.com"], "at '/serve/cors/allowOrigins/0'"),
    ("serve-autoscaling-min-over-max", ["--set", "serve.app.autoscaling.minReplicas=9"],
     "serve.app.autoscaling: minReplicas (9) must not exceed maxReplicas (4)"),
    ("unknown-storage-kind", ["--set", "storage.kind=nfs"], "at '/storage/kind': value must be one of 'claim', 's3'"),
    ("s3-without-bucket", ["--set", "storage.kind=s3", "--set", "storage.s3.credentialsSecret=xalign-s3"],
     "at '/storage/s3/bucket': minLength: got 0, want 1"),
    ("s3-without-credentials", ["--set", "storage.kind=s3", "--set", "storage.s3.bucket=xalign-artifacts"],
     "at '/storage/s3/credentialsSecret': minLength: got 0, want 1"),
    ("s3-bad-bucket", ["-f", str(CHART / "values-s3.yaml"), "--set", "storage.s3.bucket=Xalign_Artifacts"],
     "at '/storage/s3/bucket'"),
    ("s3-prefix-slashes", ["-f", str(CHART / "values-s3.yaml"), "--set", "storage.s3.prefix=/team-a/"],
     "at '/storage/s3/prefix'"),
    ("s3-unknown-key", ["-f", str(CHART / "values-s3.yaml"), "--set", "storage.s3.accessKey=abc"],
     "at '/storage/s3': additional properties 'accessKey' not allowed"),
    # The templates repeat the cross-field checks for renders that skip the schema.
    ("s3-without-bucket-unchecked", ["--skip-schema-validation", "--set", "storage.kind=s3",
                                     "--set", "storage.s3.credentialsSecret=xalign-s3"],
     "storage.s3.bucket is required when storage.kind is s3"),
    ("s3-without-credentials-unchecked", ["--skip-schema-validation", "--set", "storage.kind=s3",
                                          "--set", "storage.s3.bucket=xalign-artifacts"],
     "storage.s3.credentialsSecret is required when storage.kind is s3"),
    ("unknown-storage-kind-unchecked", ["--skip-schema-validation", "--set", "storage.kind=nfs"],
     'storage.kind must be claim or s3, not "nfs"'),
]


@pytest.mark.parametrize(("case", "args", "message"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_fail_with_a_clear_message(helm: Helm, case: str, args: list[str], message: str) -> None:
    proc = helm.template(*args)
    assert proc.returncode != 0, f"{case}: rendered although it should fail"
    assert message in proc.stderr, proc.stderr
