"""`xalign demo`: the main job end to end — prepare -> train -> serve -> evaluate — on one private Ray cluster.

Every stage is the real capability called through its Python API with a typed recipe: the stage's recipe
loaded with its YAML overrides (what `xalign prepare|train|serve|evaluate` load), then the demo's own settings
(output folders, the trained model, the directions) set as typed fields and validated again. A stage is
skipped on a rerun when its lineage key (its resolved recipe plus the keys of the stages it consumes) matches a
finished record in `<output_dir>/stages/`, so an interrupted demo resumes where it stopped and a changed recipe
re-runs only what it affects. Library output (Ray, DeepSpeed, vLLM, ...) goes to `<output_dir>/logs/<stage>.log`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, field_validator
from rich.console import Console
from rich.table import Table

from cluster.config import Strict, json_hash, load_recipe, recipe_hash, save_resolved, validate
from cluster.local_cluster import free_port
from cluster.logs import LibraryLog, library_output_to
from xalign.demo_report import (
    CheckpointLink,
    Comparison,
    DatasetLink,
    DemoSummary,
    DeploymentLink,
    Exchange,
    Lineage,
    ScoreRow,
    ScoresLink,
    TrainStats,
    write_report,
)

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


class SystemSpec(Strict):
    """One aligned system: its data, the demo's SFT stage on it, and optionally a DPO stage after (xLLMs-100)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    prepare: StageSpec
    # DPO on the dataset's preference pairs (dpo/), starting from this system's SFT export, which is also the
    # reference model. The DPO system is scored as `<name>-dpo`, next to its SFT model.
    dpo: StageSpec | None = None


class FollowupStage(Strict):
    """`xalign evaluate followups` on the base and the served system: are follow-ups acted on?"""

    languages: list[str] = Field(default_factory=lambda: ["de", "sw", "zh"], min_length=2)
    limit: int = Field(10, gt=0)  # conversations per kind and language
    overrides: list[str] = Field(default_factory=list)  # FollowupSettings keys, e.g. generation.max_tokens=128


class DemoRecipe(Strict):
    kind: Literal["demo"] = "demo"
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    output_dir: str = "outputs/demo"
    num_cpus: int | None = None  # embedded cluster size (default: all cores)
    # The SFT stage every system gets: the same recipe, so the same steps x rows x max_seq_len token budget.
    train: StageSpec
    # The first system is the one served and followed in the lineage; every system is scored.
    systems: list[SystemSpec] = Field(min_length=1)
    serve: ServeStage
    evaluate: EvalStage
    followups: FollowupStage | None = None

    @field_validator("systems")
    @classmethod
    def _unique_names(cls, systems: list[SystemSpec]) -> list[SystemSpec]:
        names = [n for s in systems for n in (s.name, f"{s.name}-dpo" if s.dpo else None) if n]
        clash = sorted({n for n in names if names.count(n) > 1} | ({"base", "base-fewshot"} & set(names)))
        if clash:
            raise ValueError(f"system names (and <name>-dpo) must be unique and not base or base-fewshot: "
                             f"{', '.join(clash)}")
        return systems


PROFILES = {"quick": "demo-quick", "dpo": "demo-dpo", "full": "demo-full"}


# ---- what the stages produce: stored in stages/<stage>.json, read back on a rerun -----------------------------


class PrepareResult(BaseModel):
    path: str  # the dataset folder
    dataset_id: str


class TrainResult(BaseModel):
    run_dir: str
    model: str  # export/model: the merged Hugging Face model
    adapter: str  # export/adapter
    lineage: dict[str, Any]  # export/lineage.json
    first_loss: float | None
    last_loss: float | None
    steps: int
    reward_margin: float | None = None  # DPO: the last step's mean chosen - rejected reward
    reward_accuracy: float | None = None  # DPO: the last step's share of pairs with a positive margin


class ServeResult(BaseModel):
    url: str
    model: str
    served_models: list[str]
    exchanges: list[Exchange]


class EvalResult(BaseModel):
    run_dir: str
    rows: list[ScoreRow]


class FollowupResult(BaseModel):
    report: str  # followups.json
    pass_rates: dict[str, float | None]  # kind -> share of conversations that changed the asked way


R = TypeVar("R", bound=BaseModel)


class DemoStageRecord(BaseModel, Generic[R]):
    """A finished stage: `stages/<stage>.json` holds {key, result, seconds}; `reused` says whether this invocation
    took it from there."""

    key: str
    result: R
    seconds: float
    reused: bool = Field(False, exclude=True)


def _key(*parts: Any) -> str:
    return json_hash(parts)


M = TypeVar("M", bound=BaseModel)


def _with(recipe: M, **update: Any) -> M:
    """`recipe` with fields replaced by typed values (sub-models built with `model_copy`), validated again so that a
    bad value is a RecipeError naming its key."""
    return validate(type(recipe), recipe.model_copy(update=update).model_dump(), f"{getattr(recipe, 'name', '')} "
                    f"(set by the demo: {', '.join(update)})")


class StageStore:
    """Finished stages by lineage key in `<output_dir>/stages/`; each stage that runs writes its library output to
    `<output_dir>/logs/<stage>.log` (when a log is given)."""

    def __init__(self, root: Path, log: LibraryLog | None = None) -> None:
        self.dir = root / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log

    def finished(self, stage: str, key: str, result: type[R]) -> DemoStageRecord[R] | None:
        path = self.dir / f"{stage}.json"
        if not path.exists():
            return None
        try:
            rec = DemoStageRecord[result].model_validate(json.loads(path.read_text()))
        except ValueError:  # unreadable, or not what this demo writes: run the stage again
            return None
        return rec if rec.key == key else None

    def run(self, stage: str, key: str, result: type[R], fn: Callable[[], R],
            check: Callable[[R], bool]) -> DemoStageRecord[R]:
        rec = self.finished(stage, key, result)
        if rec is not None and check(rec.result):
            console.print(f"[cyan]= {stage}[/cyan]: reused (lineage key {key}, took {rec.seconds:.0f}s before)")
            return rec.model_copy(update={"reused": True})
        console.rule(f"[bold]{stage}")
        if self.log is not None:
            self.log.switch(self.log.path.parent / f"{stage}.log")
        t0 = time.time()
        done = DemoStageRecord[result](key=key, result=fn(), seconds=round(time.time() - t0, 1))
        (self.dir / f"{stage}.json").write_text(done.model_dump_json(indent=2))
        console.print(f"[green]✓ {stage}[/green] in {done.seconds:.0f}s")
        return done


def prepare_recipe(spec: StageSpec, out: Path):
    """The prepare stage's recipe: the spec's, writing under `<out>/datasets`."""
    from pipelines.data.recipe import PrepareRecipe

    return _with(load_recipe(PrepareRecipe, spec.recipe, spec.overrides), output_dir=str(out / "datasets"))


def train_recipe(spec: StageSpec, dataset: str, out: Path, tag: str, base: str | None = None):
    """The train stage's recipe: the spec's, on `dataset`, as run `<out>/runs/<tag>` (from `base`, a model folder,
    when given: DPO starts from the SFT export)."""
    from pipelines.train.recipe import TrainRecipe

    loaded = load_recipe(TrainRecipe, spec.recipe, spec.overrides)
    update: dict[str, Any] = {"data": loaded.data.model_copy(update={"path": dataset}),
                              "run": loaded.run.model_copy(update={"output_dir": str(out / "runs"), "name": tag})}
    if base is not None:
        update["model"] = loaded.model.model_copy(update={"base": base})
    return _with(loaded, **update)


def serve_recipe(spec: ServeStage, model: str, run_dir: str):
    """The serve stage's recipe: the spec's, serving `model` named after its training run (the lineage reads
    run -> served model)."""
    from serving.recipe import ServeRecipe

    loaded = load_recipe(ServeRecipe, spec.recipe, spec.overrides)
    return _with(loaded, engine=loaded.engine.model_copy(update={"model": model}),
                 served_model_name=f"{Path(run_dir).name}-tuned")


def eval_recipe(spec: EvalStage, model: str, label: str, out: Path, few_shot: bool = False):
    """An evaluate stage's recipe: the spec's suite aimed at `model` on the demo's directions, as run `label`."""
    from evaluation.recipe import EvalRecipe

    return load_recipe(EvalRecipe, spec.recipe, spec.overrides).for_model(
        model, spec.directions, limit=spec.limit, output_dir=out / "eval", run_id=label,
        prompt="few_shot" if few_shot else None)


def _prepare(spec: StageSpec, out: Path, address: str, tag: str, store: StageStore) -> DemoStageRecord[PrepareResult]:
    from pipelines.data.prepare import run_prepare

    recipe = prepare_recipe(spec, out)

    def go() -> PrepareResult:
        path = run_prepare(recipe, address=address, log=lambda m: console.print(f"  [dim]{m}[/dim]"))
        manifest = json.loads((path / "manifest.json").read_text())
        return PrepareResult(path=str(path), dataset_id=manifest["dataset_id"])

    return store.run(f"prepare-{tag}", _key("prepare", recipe_hash(recipe)), PrepareResult, go,
                     lambda r: (Path(r.path) / "manifest.json").exists())


def _train(spec: StageSpec, data: DemoStageRecord[PrepareResult], out: Path, address: str, tag: str,
           store: StageStore, start: DemoStageRecord[TrainResult] | None = None,
           stage: str = "train") -> DemoStageRecord[TrainResult]:
    from pipelines.train.run import run_train

    recipe = train_recipe(spec, data.result.path, out, tag, start.result.model if start else None)
    key = _key(stage, recipe_hash(recipe), data.key, start.key if start else None)

    def go() -> TrainResult:
        import shutil

        stale = out / "runs" / tag  # a half-finished run of an older key: start clean
        shutil.rmtree(stale, ignore_errors=True)
        run_dir = run_train(recipe, address=address)
        export = run_dir / "export"
        lineage = json.loads((export / "lineage.json").read_text())
        steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [s["loss"] for s in steps if "loss" in s]
        last = steps[-1] if steps else {}
        return TrainResult(run_dir=str(run_dir), model=str(export / "model"), adapter=str(export / "adapter"),
                           lineage=lineage, first_loss=losses[0] if losses else None,
                           last_loss=losses[-1] if losses else None, steps=len(losses),
                           reward_margin=last.get("reward_margin"), reward_accuracy=last.get("reward_accuracy"))

    return store.run(f"{stage}-{tag}", key, TrainResult, go, lambda r: (Path(r.model) / "config.json").exists())


def _serve(spec: ServeStage, trained: DemoStageRecord[TrainResult], address: str,
           store: StageStore) -> DemoStageRecord[ServeResult]:
    import httpx

    from serving.app import deploy, shutdown
    from serving.middleware import load_api_key

    recipe = serve_recipe(spec, trained.result.model, trained.result.run_dir)
    key = _key("serve", recipe_hash(recipe), [r.model_dump() for r in spec.requests], trained.key)

    def go() -> ServeResult:
        url = deploy(recipe, port=free_port())
        exchanges: list[Exchange] = []
        # The server turns auth on when the recipe's key variable is set (as in a user's shell); present it.
        api_key = load_api_key(recipe.auth)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            with httpx.Client(base_url=url, timeout=600, headers=headers) as client:
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
        return ServeResult(url=url, model=trained.result.model,
                           served_models=[m["id"] for m in models.get("data", [])], exchanges=exchanges)

    return store.run("serve", key, ServeResult, go, lambda r: bool(r.exchanges or not spec.requests))


def _ask(client, body: dict, exchanges: list[Exchange]) -> dict:
    answer = client.post("/v1/translate", json=body).raise_for_status().json()
    item = answer["items"][0]
    exchanges.append(Exchange(request=body, response={
        "translation": item["translation"], "off_target": item["off_target"],
        "source_lang": (item.get("source_lang") or {}).get("code"),
        "output_lang": (item.get("output_lang") or {}).get("code"), "guard": item["guard"]["action"]}))
    return answer


def _describe(answer: dict) -> str:
    item = answer["items"][0]
    src, out = item.get("source_lang") or {}, item.get("output_lang") or {}
    return (f"{item['translation']}  [dim](source {src.get('code')}, output {out.get('code')}, "
            f"off-target {item['off_target']}, guard {item['guard']['action']})[/dim]")


def _evaluate(spec: EvalStage, model: str, label: str, upstream: str, out: Path, address: str, store: StageStore,
              few_shot: bool = False) -> DemoStageRecord[EvalResult]:
    from evaluation.runner import evaluate

    recipe = eval_recipe(spec, model, label, out, few_shot)
    key = _key("evaluate", recipe_hash(recipe), upstream)

    def go() -> EvalResult:
        import shutil

        shutil.rmtree(out / "eval" / label, ignore_errors=True)
        run = evaluate(recipe, address=address)
        doc = json.loads(run.scores.read_text())
        return EvalResult(run_dir=str(run.root), rows=[ScoreRow(direction=r["direction"], resource=r.get("resource"),
                                                                scores=r["scores"]) for r in doc["rows"]])

    return store.run(f"evaluate-{label}", key, EvalResult, go, lambda r: Path(r.run_dir).exists())


def followup_settings(spec: FollowupStage, model: str, label: str, out: Path):
    from cluster.config import apply_overrides
    from evaluation.followups import FollowupSettings

    data = apply_overrides({}, spec.overrides)
    data.update(languages=spec.languages, limit=spec.limit, output_dir=str(out / "followups"), run_id=label)
    data.setdefault("engine", {})["model"] = model
    return validate(FollowupSettings, data, "demo followups")


def _followups(spec: FollowupStage, model: str, label: str, upstream: str, out: Path, address: str,
               store: StageStore) -> DemoStageRecord[FollowupResult]:
    from evaluation.followups import run_followups

    settings = followup_settings(spec, model, label, out)
    key = _key("followups", recipe_hash(settings), upstream)

    def go() -> FollowupResult:
        path, report = run_followups(settings, address=address)
        return FollowupResult(report=str(path), pass_rates={k: v["pass_rate"] for k, v in report["kinds"].items()})

    return store.run(f"followups-{label}", key, FollowupResult, go, lambda r: Path(r.report).exists())


def _compare(recipe: DemoRecipe, systems: dict[str, DemoStageRecord[EvalResult]], out: Path) -> dict[str, Comparison]:
    """Paired tests (`xalign evaluate compare`) of every trained system against the strongest untrained reference
    (the few-shot base when scored, else the base), and of each DPO model against its own SFT model."""
    from evaluation.compare import compare
    from evaluation.significance import mcnemar_exact

    reference = "base-fewshot" if "base-fewshot" in systems else "base"
    pairs = [(reference, name) for name in systems if name not in ("base", "base-fewshot")]
    pairs += [(name.removesuffix("-dpo"), name) for name in systems if name.endswith("-dpo")]
    found: dict[str, Comparison] = {}
    for a, b in pairs:
        folder, result = compare(systems[a].result.run_dir, systems[b].result.run_dir,
                                 out=out / "compare" / f"{a}-vs-{b}")
        directions = result["directions"]
        chrf = {k: v["chrf"] for k, v in directions.items() if "chrf" in v}
        off = {k: v["off_target"] for k, v in directions.items() if "off_target" in v}
        only_a, only_b = sum(v["only_base"] for v in off.values()), sum(v["only_new"] for v in off.values())
        found[f"{a}-vs-{b}"] = Comparison(
            baseline=a, system=b, folder=str(folder),
            chrf_wins=sum(1 for v in chrf.values() if v["delta"] > 0),
            chrf_significant_wins=sum(1 for v in chrf.values() if v["significant"] and v["delta"] > 0),
            chrf_significant_losses=sum(1 for v in chrf.values() if v["significant"] and v["delta"] < 0),
            directions=len(directions), chrf={k: _cell(v) for k, v in chrf.items()},
            off_target_only_baseline=only_a, off_target_only_system=only_b,
            off_target_p=mcnemar_exact(only_a, only_b))
    return found


def _cell(v: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get(k) for k in ("base", "new", "delta", "p_value", "significant", "base_ci", "new_ci")}


# ---- the summary: summary.json, report.md and the console table -------------------------------------------------


@dataclass(frozen=True)
class DemoStages:
    """What the stages of one demo produced, in the order they ran. `trained` and `datasets` are keyed by the scored
    system's name (`<name>` for SFT, `<name>-dpo` after DPO); the first is the served one."""

    datasets: dict[str, DemoStageRecord[PrepareResult]]
    trained: dict[str, DemoStageRecord[TrainResult]]
    served: DemoStageRecord[ServeResult]
    systems: dict[str, DemoStageRecord[EvalResult]]
    comparisons: dict[str, Comparison]
    followups: dict[str, FollowupResult]

    @property
    def primary(self) -> str:
        return next(iter(self.trained))


def run_demo(recipe: DemoRecipe, address: str | None = None, verbose: bool = False) -> Path:
    """Run every stage on one Ray cluster (embedded unless `address`); returns the demo folder. Library output goes
    to `<output_dir>/logs/` unless `verbose`."""
    from cluster.ray_session import ray_session

    out = Path(recipe.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, out)
    t0 = time.time()
    with library_output_to(None if verbose else out / "logs" / "cluster.log") as log:
        if log is not None:
            console.print(f"[dim]library output (Ray, DeepSpeed, torch, vLLM, warnings): {log.path.parent}/"
                          f"<stage>.log  (--verbose shows it)[/dim]", soft_wrap=True)
        store = StageStore(out, log)
        with ray_session(address, num_cpus=recipe.num_cpus) as addr:
            console.print(f"Ray cluster: {addr}   demo folder: {out}")
            stages = _run_stages(recipe, out, addr, store)
        if log is not None:
            log.switch(log.path.parent / "report.log")
        _summarize(recipe, out, stages, time.time() - t0)
    return out


def train_systems(recipe: DemoRecipe, out: Path, addr: str, store: StageStore) -> tuple[
        dict[str, DemoStageRecord[PrepareResult]], dict[str, DemoStageRecord[TrainResult]]]:
    """Prepare and train every system (SFT, then DPO from the SFT export where the system has it); both dicts are
    keyed by the name each trained model is scored under."""
    datasets: dict[str, DemoStageRecord[PrepareResult]] = {}
    trained: dict[str, DemoStageRecord[TrainResult]] = {}
    for system in recipe.systems:
        data = _prepare(system.prepare, out, addr, system.name, store)
        sft = trained[system.name] = _train(recipe.train, data, out, addr, system.name, store)
        datasets[system.name] = data
        if system.dpo is not None:
            name = f"{system.name}-dpo"
            trained[name] = _train(system.dpo, data, out, addr, name, store, start=sft, stage="dpo")
            datasets[name] = data
    return datasets, trained


def _run_stages(recipe: DemoRecipe, out: Path, addr: str, store: StageStore) -> DemoStages:
    datasets, trained = train_systems(recipe, out, addr, store)
    primary = trained[recipe.systems[0].name]
    served = _serve(recipe.serve, primary, addr, store)
    ev = recipe.evaluate
    systems = {"base": _evaluate(ev, "default", "base", "base-model", out, addr, store)}
    if ev.few_shot_base:
        systems["base-fewshot"] = _evaluate(ev, "default", "base-fewshot", "base-model", out, addr, store,
                                            few_shot=True)
    for name, run in trained.items():
        systems[name] = _evaluate(ev, run.result.model, name, run.key, out, addr, store)
    followups = {}
    if recipe.followups is not None:  # the base model and the served system
        for name, model, key in (("base", "default", "base-model"),
                                 (recipe.systems[0].name, primary.result.model, primary.key)):
            followups[name] = _followups(recipe.followups, model, name, key, out, addr, store).result
    return DemoStages(datasets=datasets, trained=trained, served=served, systems=systems,
                      comparisons=_compare(recipe, systems, out), followups=followups)


def _checkpoint(run: DemoStageRecord[TrainResult]) -> CheckpointLink:
    lin = run.result.lineage
    return CheckpointLink(run_dir=run.result.run_dir, export=run.result.model, stage_key=run.key,
                          dataset_id=lin.get("dataset_id"), step=lin.get("step"), base_model=lin.get("base_model"))


def _stats(run: DemoStageRecord[TrainResult]) -> TrainStats:
    r = run.result
    return TrainStats(first_loss=r.first_loss, last_loss=r.last_loss, steps=r.steps, run_dir=r.run_dir,
                      reward_margin=r.reward_margin, reward_accuracy=r.reward_accuracy)


def _summarize(recipe: DemoRecipe, out: Path, stages: DemoStages, seconds: float) -> DemoSummary:
    primary = stages.primary
    data, tuned, served = stages.datasets[primary], stages.trained[primary], stages.served
    lineage = Lineage(
        dataset=DatasetLink(path=data.result.path, dataset_id=data.result.dataset_id, stage_key=data.key),
        checkpoint=_checkpoint(tuned),
        deployment=DeploymentLink(model=served.result.model, served_models=served.result.served_models,
                                  stage_key=served.key),
        scores={name: ScoresLink(run_dir=s.result.run_dir, stage_key=s.key) for name, s in stages.systems.items()},
        trained={name: _checkpoint(run) for name, run in stages.trained.items()},
    )
    timed: dict[str, DemoStageRecord[Any]] = {}
    for name in stages.trained:
        timed[f"prepare-{name}"] = stages.datasets[name]
        timed[f"{'dpo' if name.endswith('-dpo') else 'train'}-{name}"] = stages.trained[name]
    timed["serve"] = served
    timed.update({f"evaluate-{name}": s for name, s in stages.systems.items()})
    summary = DemoSummary(
        demo=recipe.name, seconds=round(seconds, 1),
        stage_seconds={k: v.seconds for k, v in timed.items() if not (k.startswith("prepare-") and k.endswith("-dpo"))},
        train=_stats(tuned), trained={name: _stats(run) for name, run in stages.trained.items()},
        lineage=lineage, exchanges=served.result.exchanges,
        systems={name: s.result.rows for name, s in stages.systems.items()}, comparisons=stages.comparisons,
        followups={name: f.pass_rates for name, f in stages.followups.items()},
    )
    (out / "summary.json").write_text(summary.to_json())
    report = write_report(out, summary)
    _print_summary(summary, report)
    return summary


def _print_summary(summary: DemoSummary, report: Path) -> None:
    names = list(summary.systems)
    table = Table(title="Flores-200 dev subset: chrF / BLEU / off-target %")
    table.add_column("direction")
    for n in names:
        table.add_column(n, justify="right")
    for d in [r.direction for r in summary.systems[names[0]]]:
        cells = []
        for n in names:
            row = next((r for r in summary.systems[n] if r.direction == d), None)
            sc = {k: v for k, v in (row.scores if row else {}).items() if v is not None}
            cells.append(f"{sc.get('chrf', float('nan')):.1f} / {sc.get('bleu', float('nan')):.1f} / "
                         f"{sc.get('off_target', float('nan')):.0f}")
        table.add_row(d, *cells)
    console.print(table)
    lin = summary.lineage
    console.print(f"[bold]lineage[/bold]: dataset {lin.dataset.dataset_id[:12]} → checkpoint "
                  f"{Path(lin.checkpoint.run_dir).name} (step {lin.checkpoint.step}) → deployment "
                  f"{', '.join(lin.deployment.served_models)} → scores {', '.join(lin.scores)}")
    for c in summary.comparisons.values():
        console.print(f"{c.system} vs {c.baseline}: chrF higher in {c.chrf_wins}/{c.directions} directions "
                      f"({c.chrf_significant_wins} significantly, {c.chrf_significant_losses} significantly lower); "
                      f"off-target segments {c.off_target_only_baseline} only in {c.baseline}, "
                      f"{c.off_target_only_system} only in {c.system} (McNemar p={c.off_target_p:.3g})")
    console.print(f"train loss {summary.train.first_loss} → {summary.train.last_loss} "
                  f"over {summary.train.steps} steps; demo took {summary.seconds:.0f}s")
    console.print(f"report: {report}")


def register(sub) -> None:
    from xalign.commands.args import add_address_arg, add_recipe_args, add_verbose_arg

    p = sub.add_parser("demo", help="the main job: prepare -> train -> serve -> evaluate, base vs tuned")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="quick: a few minutes on 2 CPU cores; dpo: SFT then DPO (xLLMs-100), about 20 minutes; "
                        "full: every system side by side, the run behind docs/RESULTS.md")
    add_recipe_args(p)
    add_address_arg(p)
    add_verbose_arg(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    recipe = load_recipe(DemoRecipe, args.recipe or PROFILES[args.profile], args.overrides)
    run_demo(recipe, address=args.address, verbose=args.verbose)
    return 0
