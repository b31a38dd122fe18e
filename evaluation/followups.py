"""Does the model act on a follow-up? A small check on Flores-200 dev follow-ups (`xalign evaluate followups`).

Interactive translation is only useful when the second answer changes the way the user asked, so each
conversation starts with the model's own first-turn translation (source -> X, Flores-200 dev_subset510) and
asks one follow-up in the wording serving understands (`cluster.prompts.follow_up`):

- `retarget`: "Now translate it into Y." passes when `cluster.langid` says the answer is in Y;
- `shorter`: the first turn translates a two-sentence passage (consecutive Flores dev sentences);
  "Make the X translation shorter." passes when the answer has fewer characters than the model's own first
  answer and is still in X.

Both rounds are batched greedy generation in one vLLM engine, held by a Ray actor that runs the batch
evaluator's `VLLMTranslator` (the same engine settings, prompts and stop tokens as `xalign evaluate`).
The report is `<output_dir>/<run id>/followups.json` (per kind: n, pass rate, per language, failure reasons,
examples) and `conversations.jsonl` (every conversation and its verdict); an `output_dir` in object storage gets
the same folder, staged on this node and uploaded at the end (as `xalign evaluate` does).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from tqdm.auto import tqdm

from cluster import langid, languages, prompts
from cluster.config import Strict, save_resolved
from cluster.engine import EngineSettings
from cluster.locations import data_root
from evaluation import lineage
from evaluation.directions import Direction
from evaluation.generation.requests import prompt_text
from evaluation.loaders import ParallelFolder
from evaluation.outputs import RunDir, safe_name, write_json
from evaluation.recipe import GenerationSettings

Kind = Literal["retarget", "shorter"]
KINDS: tuple[str, ...] = ("retarget", "shorter")


class FollowupError(ValueError):
    """Settings the test set cannot serve (e.g. more passages asked for than it has)."""


class FollowupSettings(Strict):
    """What `xalign evaluate followups` runs; every flag is a key here (`--model` is `engine.model`)."""

    engine: EngineSettings = EngineSettings()  # engine.model is the model
    generation: GenerationSettings = GenerationSettings()  # greedy (temperature 0) unless told otherwise
    data_root: str | None = None  # default: cluster.locations.data_root() (XALIGN_DATA or ../shared/data)
    test_set: str = "flores200/dev_subset510"  # a folder of <flores code>.dev files (relative to the data root)
    source: str = "eng_Latn"
    languages: list[str] = Field(
        default_factory=lambda: ["deu_Latn", "fra_Latn", "zho_Hans", "swh_Latn"], min_length=1,
        description="first-turn targets X; a retarget asks for another of them",
    )
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), min_length=1)
    limit: int = Field(20, gt=0, description="conversations per kind and language")
    examples: int = Field(3, ge=0, description="passing and failing conversations per kind in the report")
    output_dir: str = "outputs/reports"
    run_id: str | None = None  # default: <timestamp>-followups-<model>

    @field_validator("languages", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v  # --languages de,sw

    @field_validator("languages")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        codes = [languages.get(x).flores for x in v]  # UnknownLanguageError is a ValueError naming the code
        if len(set(codes)) != len(codes):
            raise ValueError("a language is listed twice")
        return codes

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return languages.get(v).flores

    @model_validator(mode="after")
    def _consistent(self) -> FollowupSettings:
        if self.source in self.languages:
            raise ValueError(f"languages: {self.source} is the source language (source); list targets only")
        if "retarget" in self.kinds and len(self.languages) < 2:
            raise ValueError("languages: a retarget asks for another listed language; list at least two")
        if self.generation.prompt != "chat":
            raise ValueError("generation.prompt: follow-ups are chat turns; use chat")
        return self


# ---- Judging -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # failure codes: empty, not_shorter, off_target, undetermined; () when passed
    detail: str


def _language(answer: str, lang: str) -> tuple[str, str] | None:
    """(code, detail) when `answer` cannot be shown to be in `lang`, else None."""
    verdict = langid.is_on_target(answer, lang)
    if verdict is None:
        return "undetermined", "too short to identify its language"
    if not verdict:
        det = langid.detect(answer)
        return "off_target", f"not in {lang} (detected {det.flores or det.label})"
    return None


def _verdict(failures: list[tuple[str, str]], ok: str) -> Verdict:
    if not failures:
        return Verdict(True, (), ok)
    return Verdict(False, tuple(code for code, _ in failures), "; ".join(text for _, text in failures))


def judge_retarget(answer: str, lang: str) -> Verdict:
    """Pass when the answer is in `lang`, the language the follow-up asked for."""
    lang = languages.get(lang).flores
    if not answer.strip():
        return _verdict([("empty", "empty answer")], "")
    wrong = _language(answer, lang)
    return _verdict([wrong] if wrong else [], f"in {lang}")


def judge_shorter(answer: str, previous: str, lang: str) -> Verdict:
    """Pass when the answer has fewer characters than `previous` (the model's own first answer) and is still
    in `lang`."""
    lang = languages.get(lang).flores
    if not answer.strip():
        return _verdict([("empty", "empty answer")], "")
    now, before = len(answer.strip()), len(previous.strip())
    failures = [] if now < before else [("not_shorter", f"not shorter ({now} >= {before} characters)")]
    wrong = _language(answer, lang)
    failures += [wrong] if wrong else []
    return _verdict(failures, f"{now} < {before} characters, in {lang}")


# ---- Conversations -------------------------------------------------------------------------------------


@dataclass
class Conversation:
    kind: str
    src: str
    tgt: str  # the first turn's target X
    answer_lang: str  # the language the follow-up answer must be in (Y for retarget, X for shorter)
    id: str  # Flores dev line(s), e.g. "5" or "5+6"
    source: str
    reference: str
    first_answer: str = ""
    follow_up: str = ""
    answer: str = ""
    passed: bool = False
    reasons: tuple[str, ...] = ()
    detail: str = ""
    first_on_target: bool | None = None


def passages(ids: list[str]) -> list[tuple[int, int]]:
    """Non-overlapping (i, i+1) whose Flores dev lines are consecutive: two sentences of one document."""
    out: list[tuple[int, int]] = []
    i = 0
    while i + 1 < len(ids):
        if ids[i].isdigit() and ids[i + 1].isdigit() and int(ids[i + 1]) == int(ids[i]) + 1:
            out.append((i, i + 1))
            i += 2
        else:
            i += 1
    return out


def _join(lang: str, a: str, b: str) -> str:
    return a.strip() + ("" if languages.get(lang).script in ("Hans", "Hant", "Jpan") else " ") + b.strip()


def _shown(path: str) -> str:
    return lineage.display_path(Path(path))


def data_folder(settings: FollowupSettings) -> Path:
    p = Path(settings.test_set).expanduser()
    if p.is_absolute():
        return p
    root = Path(settings.data_root).expanduser() if settings.data_root else data_root()
    assert root is not None
    return root / p


def build_conversations(settings: FollowupSettings) -> list[Conversation]:
    """The first turns, `limit` per kind and language; a retarget's Y cycles through the other languages."""
    folder = ParallelFolder(data_folder(settings), (".dev",))
    out: list[Conversation] = []
    for li, tgt in enumerate(settings.languages):
        data = folder.load(Direction(settings.source, tgt))
        others = [x for x in settings.languages if x != tgt]
        if "retarget" in settings.kinds:
            if len(data) < settings.limit:
                raise FollowupError(f"limit: {settings.limit} sentences asked for, {_shown(data.origin['source'])} "
                                    f"has {len(data)}")
            for i in range(settings.limit):
                out.append(Conversation("retarget", settings.source, tgt, others[(li + i) % len(others)],
                                        data.ids[i], data.sources[i], data.references[0][i]))
        if "shorter" in settings.kinds:
            pairs = passages(data.ids)
            if len(pairs) < settings.limit:
                raise FollowupError(f"limit: {settings.limit} two-sentence passages asked for, "
                                    f"{_shown(data.origin['source'])} has {len(pairs)}")
            for a, b in pairs[: settings.limit]:
                out.append(Conversation(
                    "shorter", settings.source, tgt, tgt, f"{data.ids[a]}+{data.ids[b]}",
                    _join(settings.source, data.sources[a], data.sources[b]),
                    _join(tgt, data.references[0][a], data.references[0][b])))
    return out


def first_turn(c: Conversation, template: int) -> list[dict[str, str]]:
    return prompts.translation_messages(c.src, c.tgt, c.source, template)


def second_turn(c: Conversation, template: int) -> list[dict[str, str]]:
    """The first turn with the model's own answer, then the follow-up."""
    return [*first_turn(c, template), {"role": "assistant", "content": c.first_answer},
            {"role": "user", "content": c.follow_up}]


def judge(c: Conversation) -> None:
    v = judge_retarget(c.answer, c.answer_lang) if c.kind == "retarget" else judge_shorter(
        c.answer, c.first_answer, c.answer_lang)
    c.passed, c.reasons, c.detail = v.passed, v.reasons, v.detail
    c.first_on_target = langid.is_on_target(c.first_answer, c.tgt)


# ---- Generation ----------------------------------------------------------------------------------------


class ConversationEngine:
    """A Ray actor holding one vLLM engine for both rounds (the batch evaluator's `VLLMTranslator`)."""

    def __init__(self, model_path: str, engine: dict[str, Any], generation: dict[str, Any]) -> None:
        from evaluation.generation.vllm_batch import VLLMTranslator

        self.translator = VLLMTranslator(model_path, engine, generation)

    def generate(self, rows: list[dict[str, Any]]) -> list[str]:
        batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
        return [str(x) for x in self.translator(batch)["hypothesis"]]


def _rows(convs: list[Conversation], round_: int, template: int) -> list[dict[str, Any]]:
    rows = []
    for c in convs:
        row = {"direction": f"{c.src}-{c.tgt}", "src": c.src, "tgt": c.tgt, "source": c.source, "style": "chat"}
        row["messages"] = json.dumps(first_turn(c, template) if round_ == 1 else second_turn(c, template))
        rows.append(row)
    return rows


def _generate(engine: Any, rows: list[dict[str, Any]], batch_size: int, desc: str) -> list[str]:
    import ray

    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    refs = [engine.generate.remote(b) for b in batches]  # queued on the actor, run one after another
    out: list[str] = []
    with tqdm(total=len(rows), desc=desc, unit="conv") as bar:
        for ref, b in zip(refs, batches):
            out += ray.get(ref)
            bar.update(len(b))
    return out


def generate_rounds(convs: list[Conversation], model_path: Path, settings: FollowupSettings) -> None:
    """Fill in the first answers, the follow-ups and the follow-up answers (two batched greedy rounds)."""
    import ray

    g = settings.generation
    resources = {"num_cpus": g.num_cpus, **({"num_gpus": g.num_gpus} if g.num_gpus else {})}
    actor = ray.remote(ConversationEngine).options(**resources)
    engine = actor.remote(str(model_path), settings.engine.model_dump(), g.model_dump())
    try:
        firsts = _generate(engine, _rows(convs, 1, g.template), g.batch_size, "first turns")
        for c, text in zip(convs, firsts):
            c.first_answer = text
            c.follow_up = prompts.follow_up(c.kind, c.answer_lang)
        for c, text in zip(convs, _generate(engine, _rows(convs, 2, g.template), g.batch_size, "follow-ups")):
            c.answer = text
    finally:
        ray.kill(engine)


# ---- Report --------------------------------------------------------------------------------------------


def _rate(convs: list[Conversation]) -> dict[str, Any]:
    n, passed = len(convs), sum(c.passed for c in convs)
    on = [c.first_on_target for c in convs if c.first_on_target is not None]
    return {"n": n, "passed": passed, "pass_rate": round(passed / n, 4) if n else None,
            "first_turn_on_target": round(sum(on) / len(on), 4) if on else None}


def _example(c: Conversation) -> dict[str, Any]:
    keep = ("id", "src", "tgt", "answer_lang", "source", "first_answer", "follow_up", "answer", "detail")
    return {k: getattr(c, k) for k in keep}


def summarize(convs: list[Conversation], kinds: list[str], examples: int) -> dict[str, Any]:
    """Per kind: n, pass rate, per answer language, failure reasons, and a few passing and failing examples."""
    out: dict[str, Any] = {}
    for kind in kinds:
        mine = [c for c in convs if c.kind == kind]
        by_lang: dict[str, list[Conversation]] = {}
        for c in mine:
            by_lang.setdefault(c.answer_lang, []).append(c)
        out[kind] = {
            **_rate(mine),
            "by_language": {lang: _rate(cs) for lang, cs in by_lang.items()},
            "failures": dict(Counter(r for c in mine for r in c.reasons).most_common()),
            "examples": {"passed": [_example(c) for c in mine if c.passed][:examples],
                         "failed": [_example(c) for c in mine if not c.passed][:examples]},
        }
    return out


def run_followups(settings: FollowupSettings, address: str | None = None) -> tuple[Path | str, dict[str, Any]]:
    """Build the conversations, generate both rounds, judge, write the report; returns (report path, report), the
    path a URI when `output_dir` is in object storage."""
    from cluster.models import resolve_model
    from cluster.ray_session import ray_session

    started = time.time()
    convs = build_conversations(settings)  # bad data fails before a model or a cluster starts
    model_path = resolve_model(settings.engine.model)
    ident = lineage.identify(model_path, settings.engine.model)
    run_id = settings.run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-followups-{safe_name(ident['name'])}"
    run = RunDir.at(settings.output_dir, run_id)
    root = run.root
    with ray_session(address):
        generate_rounds(convs, model_path, settings)
    for c in convs:
        judge(c)
    report = {
        "run": {
            "run_id": run_id, "model": ident,
            "test_set": lineage.display_path(data_folder(settings)), "source": settings.source,
            "languages": settings.languages, "limit": settings.limit,
            "prompt": {"module": "cluster.prompts", "template": settings.generation.template,
                       "follow_ups": {k: prompts.FOLLOW_UPS[k] for k in settings.kinds}},
            "sampling": {"max_tokens": settings.generation.max_tokens,
                         "temperature": settings.generation.temperature},
            "engine": settings.engine.model_dump(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "duration_s": round(time.time() - started, 3),
        },
        "kinds": summarize(convs, settings.kinds, settings.examples),
    }
    root.mkdir(parents=True, exist_ok=True)
    save_resolved(settings, root)
    with (root / "conversations.jsonl").open("w", encoding="utf-8") as fh:
        for c in convs:
            prompt = prompt_text({"messages": json.dumps(second_turn(c, settings.generation.template))})
            row = {**asdict(c), "prompt": prompt}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(root / "followups.json", report)
    run.publish()
    return run.file("followups.json"), report
