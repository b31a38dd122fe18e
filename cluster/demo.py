"""`xalign demo`: the main job end to end — prepare -> train -> serve -> evaluate — on one private Ray cluster.

Every stage is the real capability called through its Python API with a recipe plus overrides, exactly what
`xalign prepare|train|serve|evaluate` run. A stage is skipped on a rerun when its lineage key (its resolved
recipe plus the keys of the stages it consumes) matches a finished record in `<output_dir>/stages/`, so an
interrupted demo resumes where it stopped and a changed recipe re-runs only what it affects.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from rich.console import Console
from rich.table import Table

from cluster.config import Strict, load_recipe, recipe_hash, save_resolved

console = Console(highlight=False)


class StageSpec(Strict):
    recipe: str
    overrides: list[str] = Field(default_factory=list)


class TranslateRequest(Strict):
    text: str = Field(min_length=1)
    target_lang: str
    source_lang: str | None = None
    refine: str | None = None  # an interactive follow-up sent after the first translation
    max_tokens: int = Field(64, gt=0)  # short answers keep the demo quick on CPU


class ServeStage(StageSpec):
    requests: list[TranslateRequest] = Field(default_factory=list)


class EvalStage(StageSpec):
    directions: list[str] = Field(min_length=1)
    limit: int = Field(gt=0)
    few_shot_base: bool = False  # also score the base model with a plain few-shot prompt (a reference point)


class DemoRecipe(Strict):
    kind: Literal["demo"] = "demo"
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    output_dir: str = "outputs/demo"
    num_cpus: int | None = None  # embedded cluster size (default: all cores)
    prepare: StageSpec
    train: StageSpec
    # BayLing 2's ablation: the same training on EN/ZH instructions only (no cross-lingual data).
    ablation: StageSpec | None = None
    serve: ServeStage
    evaluate: EvalStage


PROFILES = {"quick": "demo-quick", "full": "demo-full"}


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class StageStore:
    """Finished stages by lineage key: `<output_dir>/stages/<stage>.json` = {key, result, seconds}."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def run(self, stage: str, key: str, fn: Callable[[], dict[str, Any]], check: Callable[[dict], bool]) -> dict:
        path = self.dir / f"{stage}.json"
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("key") == key and check(rec["result"]):
                console.print(f"[cyan]= {stage}[/cyan]: reused (lineage key {key}, took {rec['seconds']:.0f}s before)")
                return rec["result"] | {"key": key, "seconds": rec["seconds"], "reused": True}
        console.rule(f"[bold]{stage}")
        t0 = time.time()
        result = fn()
        secs = round(time.time() - t0, 1)
        path.write_text(json.dumps({"key": key, "result": result, "seconds": secs}, indent=2, default=str))
        console.print(f"[green]✓ {stage}[/green] in {secs:.0f}s")
        return result | {"key": key, "seconds": secs, "reused": False}


def _prepare(spec: StageSpec, out: Path, address: str, tag: str, store: StageStore) -> dict:
    from pipelines.data.prepare import run_prepare
    from pipelines.data.recipe import PrepareRecipe

    recipe = load_recipe(PrepareRecipe, spec.recipe, [*spec.overrides, f"output_dir={out / 'datasets'}"])

    def go() -> dict:
        path = run_prepare(recipe, address=address, log=lambda m: console.print(f"  [dim]{m}[/dim]"))
        manifest = json.loads((path / "manifest.json").read_text())
        return {"path": str(path), "dataset_id": manifest["dataset_id"]}

    return store.run(f"prepare-{tag}", _key("prepare", recipe_hash(recipe)), go,
                     lambda r: (Path(r["path"]) / "manifest.json").exists())


def _train(spec: StageSpec, data: dict, out: Path, address: str, tag: str, store: StageStore) -> dict:
    from pipelines.train.recipe import TrainRecipe
    from pipelines.train.run import run_train

    overrides = [*spec.overrides, f"data.path={data['path']}", f"run.output_dir={out / 'runs'}", f"run.name={tag}"]
    recipe = load_recipe(TrainRecipe, spec.recipe, overrides)
    key = _key("train", recipe_hash(recipe), data["key"])

    def go() -> dict:
        import shutil

        stale = out / "runs" / tag  # a half-finished run of an older key: start clean
        shutil.rmtree(stale, ignore_errors=True)
        run_dir = run_train(recipe, address=address)
        export = run_dir / "export"
        lineage = json.loads((export / "lineage.json").read_text())
        steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [s["loss"] for s in steps if "loss" in s]
        return {"run_dir": str(run_dir), "model": str(export / "model"), "adapter": str(export / "adapter"),
                "lineage": lineage, "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None, "steps": len(losses)}

    return store.run(f"train-{tag}", key, go, lambda r: (Path(r["model"]) / "config.json").exists())


def _serve(spec: ServeStage, trained: dict, address: str, store: StageStore) -> dict:
    import httpx

    from serving.app import deploy, shutdown
    from serving.recipe import ServeRecipe

    # The deployment is named after the training run, so the lineage reads run -> served model.
    name = f"{Path(trained['run_dir']).name}-tuned"
    recipe = load_recipe(ServeRecipe, spec.recipe,
                         [*spec.overrides, f"engine.model={trained['model']}", f"served_model_name={name}"])
    key = _key("serve", recipe_hash(recipe), [r.model_dump() for r in spec.requests], trained["key"])

    def go() -> dict:
        url = deploy(recipe, port=_free_port())
        exchanges = []
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                models = client.get("/v1/models").raise_for_status().json()
                for req in spec.requests:
                    body = req.model_dump(exclude={"refine"}, exclude_none=True)
                    answer = _ask(client, body, exchanges)
                    console.print(f"  [bold]{req.source_lang or 'auto'}→{req.target_lang}[/bold] {req.text}")
                    console.print(f"    ⇒ {_describe(answer)}")
                    if req.refine:  # an interactive follow-up on the conversation the server returned
                        again = _ask(client, {"instruction": req.refine, "history": answer["messages"],
                                              "target_lang": req.target_lang, "max_tokens": req.max_tokens},
                                     exchanges)
                        console.print(f"    ↻ {req.refine!r} ⇒ {_describe(again)}")
        finally:
            shutdown(recipe.name)
        return {"url": url, "model": trained["model"], "served_models": [m["id"] for m in models.get("data", [])],
                "exchanges": exchanges}

    return store.run("serve", key, go, lambda r: bool(r.get("exchanges") or not spec.requests))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(client, body: dict, exchanges: list[dict]) -> dict:
    answer = client.post("/v1/translate", json=body).raise_for_status().json()
    item = answer["items"][0]
    exchanges.append({"request": body, "response": {
        "translation": item["translation"], "off_target": item["off_target"],
        "source_lang": (item.get("source_lang") or {}).get("code"),
        "output_lang": (item.get("output_lang") or {}).get("code"), "guard": item["guard"]["action"]}})
    return answer


def _describe(answer: dict) -> str:
    item = answer["items"][0]
    src, out = item.get("source_lang") or {}, item.get("output_lang") or {}
    return (f"{item['translation']}  [dim](source {src.get('code')}, output {out.get('code')}, "
            f"off-target {item['off_target']}, guard {item['guard']['action']})[/dim]")


def _evaluate(spec: EvalStage, model: str, label: str, upstream: str, out: Path, address: str, store: StageStore,
              few_shot: bool = False) -> dict:
    from evaluation.recipe import EvalRecipe
    from evaluation.runner import evaluate

    overrides = [*spec.overrides, f"engine.model={model}", f"directions={json.dumps(spec.directions)}",
                 f"limit={spec.limit}", f"output_dir={out / 'eval'}", f"run_id={label}"]
    if few_shot:
        overrides.append("generation.prompt=few_shot")
    recipe = load_recipe(EvalRecipe, spec.recipe, overrides)
    key = _key("evaluate", recipe_hash(recipe), upstream)

    def go() -> dict:
        import shutil

        shutil.rmtree(out / "eval" / label, ignore_errors=True)
        run = evaluate(recipe, address=address)
        doc = json.loads(run.scores.read_text())
        return {"run_dir": str(run.root), "rows": [{"direction": r["direction"], "resource": r.get("resource"),
                                                     "scores": r["scores"]} for r in doc["rows"]]}

    return store.run(f"evaluate-{label}", key, go, lambda r: Path(r["run_dir"]).exists())


def run_demo(recipe: DemoRecipe, address: str | None = None) -> Path:
    """Run every stage on one Ray cluster (embedded unless `address`); returns the demo folder."""
    from cluster.ray_session import ray_session

    out = Path(recipe.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, out)
    store = StageStore(out)
    t0 = time.time()
    with ray_session(address, num_cpus=recipe.num_cpus) as addr:
        console.print(f"Ray cluster: {addr}   demo folder: {out}")
        data = _prepare(recipe.prepare, out, addr, "xling", store)
        tuned = _train(recipe.train, data, out, addr, "xling", store)
        abl_data = abl = None
        if recipe.ablation is not None:
            abl_data = _prepare(recipe.ablation, out, addr, "noxling", store)
            abl = _train(recipe.train, abl_data, out, addr, "noxling", store)
        served = _serve(recipe.serve, tuned, addr, store)
        ev = recipe.evaluate
        systems = {"base": _evaluate(ev, "default", "base", "base-model", out, addr, store),
                   "tuned": _evaluate(ev, tuned["model"], "tuned", tuned["key"], out, addr, store)}
        if abl is not None:
            systems["tuned-noxling"] = _evaluate(ev, abl["model"], "tuned-noxling", abl["key"], out, addr, store)
        if ev.few_shot_base:
            systems["base-fewshot"] = _evaluate(ev, "default", "base-fewshot", "base-model", out, addr, store,
                                                few_shot=True)
    summary = _summarize(recipe, out, data, tuned, abl_data, abl, served, systems, time.time() - t0)
    return summary


def _summarize(recipe: DemoRecipe, out: Path, data: dict, tuned: dict, abl_data: dict | None, abl: dict | None,
               served: dict, systems: dict[str, dict], seconds: float) -> Path:
    from cluster.demo_report import write_report

    lineage = {
        "dataset": {"path": data["path"], "dataset_id": data["dataset_id"], "stage_key": data["key"]},
        "checkpoint": {"run_dir": tuned["run_dir"], "export": tuned["model"], "stage_key": tuned["key"],
                       "dataset_id": tuned["lineage"].get("dataset_id"), "step": tuned["lineage"].get("step"),
                       "base_model": tuned["lineage"].get("base_model")},
        "deployment": {"model": served["model"], "served_models": served["served_models"],
                       "stage_key": served["key"]},
        "scores": {name: {"run_dir": s["run_dir"], "stage_key": s["key"]} for name, s in systems.items()},
    }
    if abl is not None and abl_data is not None:
        lineage["ablation"] = {"dataset_id": abl_data["dataset_id"], "run_dir": abl["run_dir"]}
    summary = {
        "demo": recipe.name, "seconds": round(seconds, 1),
        "stage_seconds": {k: v["seconds"] for k, v in
                          {"prepare": data, "train": tuned, "serve": served, **systems}.items()},
        "train": {"first_loss": tuned["first_loss"], "last_loss": tuned["last_loss"], "steps": tuned["steps"]},
        "lineage": lineage, "exchanges": served["exchanges"],
        "systems": {name: s["rows"] for name, s in systems.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    report = write_report(out, summary)
    _print_summary(summary, report)
    return out


def _print_summary(summary: dict, report: Path) -> None:
    systems: dict[str, list[dict]] = summary["systems"]
    names = list(systems)
    table = Table(title="Flores-200 dev subset: chrF / BLEU / off-target %")
    table.add_column("direction")
    for n in names:
        table.add_column(n, justify="right")
    directions = [r["direction"] for r in systems[names[0]]]
    for d in directions:
        cells = []
        for n in names:
            row = next((r for r in systems[n] if r["direction"] == d), None)
            sc = row["scores"] if row else {}
            cells.append(f"{sc.get('chrf', float('nan')):.1f} / {sc.get('bleu', float('nan')):.1f} / "
                         f"{sc.get('off_target', float('nan')):.0f}")
        table.add_row(d, *cells)
    console.print(table)
    console.print("[bold]lineage[/bold]: dataset " f"{summary['lineage']['dataset']['dataset_id'][:12]} → checkpoint "
                  f"{Path(summary['lineage']['checkpoint']['run_dir']).name} (step "
                  f"{summary['lineage']['checkpoint']['step']}) → deployment "
                  f"{', '.join(summary['lineage']['deployment']['served_models'])} → scores "
                  f"{', '.join(summary['lineage']['scores'])}")
    console.print(f"train loss {summary['train']['first_loss']} → {summary['train']['last_loss']} "
                  f"over {summary['train']['steps']} steps; demo took {summary['seconds']:.0f}s")
    console.print(f"report: {report}")


def register(sub) -> None:
    from cluster.cli import add_address_arg, add_recipe_args

    p = sub.add_parser("demo", help="the main job: prepare -> train -> serve -> evaluate, base vs tuned")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="quick: a few minutes on 2 CPU cores; full: the run behind docs/RESULTS.md")
    add_recipe_args(p)
    add_address_arg(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    recipe = load_recipe(DemoRecipe, args.recipe or PROFILES[args.profile], args.overrides)
    run_demo(recipe, address=args.address)
    return 0
