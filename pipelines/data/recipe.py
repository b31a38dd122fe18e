"""The `kind: prepare` recipe: sources, builders, filters, mixing, packing and sharding.

Sources name input files; builders turn sources into training examples; mixing samples the builders'
outputs into one SFT mixture. Language codes are accepted in any spelling `cluster.languages` knows and
stored as Flores-200 codes. The `ray:` section only changes how the work is spread over the cluster, never
the data, so it is left out of the dataset identity.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from cluster import languages, prompts
from cluster.config import Strict

LangCode = str


def _flores(value: str) -> str:
    try:
        return languages.get(value).flores
    except languages.UnknownLanguageError as exc:
        raise ValueError(str(exc)) from None


def _reject_flores(path: str) -> str:
    # Flores-200 is xalign's evaluation set: training on it would make every reported score meaningless.
    if "flores200" in PurePath(path).parts:
        raise ValueError(f"{path}: Flores-200 is the held-out evaluation set and never a training source")
    return path


class _Source(Strict):
    limit: int | None = Field(None, ge=1, description="use only the first N records/lines (tests, quick runs)")


class InstructionSource(_Source):
    """Alpaca JSON/JSONL (`instruction`, `input`, `output`) or chat JSONL (`messages`, OpenAI form)."""

    type: Literal["alpaca", "chat"]
    path: str
    lang: LangCode | None = Field(None, description="declared language; a record's own `lang` wins")

    _path = field_validator("path")(_reject_flores)

    @field_validator("lang")
    @classmethod
    def _lang(cls, v: str | None) -> str | None:
        return None if v is None else _flores(v)


class ParallelSource(_Source):
    """Two line-aligned files, one per language."""

    type: Literal["parallel"]
    src_path: str
    tgt_path: str
    src_lang: LangCode
    tgt_lang: LangCode
    pivot: LangCode = "eng_Latn"

    _paths = field_validator("src_path", "tgt_path")(_reject_flores)
    _langs = field_validator("src_lang", "tgt_lang", "pivot")(_flores)


class TsvSource(_Source):
    """One file, `source<TAB>target` per line."""

    type: Literal["tsv"]
    path: str
    src_lang: LangCode
    tgt_lang: LangCode
    pivot: LangCode = "eng_Latn"

    _path = field_validator("path")(_reject_flores)
    _langs = field_validator("src_lang", "tgt_lang", "pivot")(_flores)


class MultiParallelSource(_Source):
    """A folder with one line-aligned file per language, `<flores code><suffix>` (the NTREX-128 layout)."""

    type: Literal["multi_parallel"]
    path: str
    languages: list[LangCode] | Literal["all"] = "all"
    suffix: str = ".txt"
    pivot: LangCode = "eng_Latn"
    variants: list[str] = Field(
        default_factory=list,
        description="optional rewrites per language, `<code>.<variant><suffix>` (e.g. formal, shorter): "
        "interactive follow-ups of that kind are built only where such a file has the line",
    )

    _path = field_validator("path")(_reject_flores)
    _pivot = field_validator("pivot")(_flores)

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str] | str) -> list[str] | str:
        if v == "all":
            return v
        codes = [_flores(x) for x in v]
        if len(set(codes)) != len(codes):
            raise ValueError("languages: listed twice")
        return codes

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in prompts.FOLLOW_UPS or x in ("retarget", "fix")]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}: use follow-up kinds with rewrites (formal, shorter)")
        return v


class PreferenceSource(_Source):
    """Preference JSONL: `prompt` (text or messages), `chosen`, `rejected`, optional `lang` and `reason`."""

    type: Literal["preference"]
    path: str
    lang: LangCode | None = None

    _path = field_validator("path")(_reject_flores)

    @field_validator("lang")
    @classmethod
    def _lang(cls, v: str | None) -> str | None:
        return None if v is None else _flores(v)


Source = Annotated[
    InstructionSource | ParallelSource | TsvSource | MultiParallelSource | PreferenceSource,
    Field(discriminator="type"),
]
PARALLEL_TYPES = ("parallel", "tsv", "multi_parallel")
INSTRUCTION_TYPES = ("alpaca", "chat")

Templates = list[Annotated[int, Field(ge=0, lt=len(prompts.TRANSLATION_TEMPLATES))]] | Literal["all", "canonical"]


class _Builder(Strict):
    sources: list[str] = Field(min_length=1)
    share: float = Field(1.0, gt=0, le=1, description="fraction of the source items this builder uses")


class InstructionsBuilder(_Builder):
    """High-resource instructions as they are (BayLing 2)."""

    type: Literal["instructions"]
    accepts: ClassVar[tuple[str, ...]] = INSTRUCTION_TYPES


class TranslationBuilder(_Builder):
    """Translation instructions from parallel text, both directions (x-LLaMA)."""

    type: Literal["translation"]
    to_non_english_share: float = Field(
        0.5, ge=0, le=1, description="share of pairs whose target is the non-pivot (non-English) side"
    )
    both_directions: bool = Field(False, description="emit both directions of every pair (share ignored)")
    templates: Templates = "all"
    languages: list[LangCode] | None = Field(None, description="subset of a multi-parallel source's languages")
    accepts: ClassVar[tuple[str, ...]] = PARALLEL_TYPES

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_flores(x) for x in v]


class InteractiveBuilder(_Builder):
    """Multi-turn interactive translation from multi-way parallel text (BayLing).

    `shorter` is taught from the text itself (`lead_sentence`: a two-sentence passage shortened to its lead
    sentence); `formal` has no such source and is built only where the source has rewrite files (`variants`).
    """

    type: Literal["interactive"]
    turns: int = Field(2, ge=2, le=6, description="assistant turns: the translation plus turns-1 follow-ups")
    follow_ups: dict[str, float] = Field(
        default_factory=lambda: {"retarget": 1.0, "formal": 1.0, "shorter": 1.0},
        description="follow-up kinds and weights; formal only where the source has rewrite files",
    )
    lead_sentence: float = Field(
        0.25, ge=0, le=1,
        description="share of conversations about a two-sentence passage (lines i and i+1 of one article) whose "
        "`shorter` follow-up is answered by the lead sentence (lead-1); needs follow_ups.shorter > 0; 0: off",
    )
    from_pivot_share: float = Field(0.5, ge=0, le=1, description="share of conversations that start from the pivot")
    templates: Templates = "all"
    accepts: ClassVar[tuple[str, ...]] = ("multi_parallel",)

    @field_validator("follow_ups")
    @classmethod
    def _kinds(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in prompts.FOLLOW_UPS or k == "fix"]
        if bad:
            raise ValueError(f"unknown follow-up kind(s) {bad} (known: retarget, formal, shorter)")
        if "retarget" not in v or any(w < 0 for w in v.values()):
            raise ValueError("follow_ups: needs retarget and non-negative weights")
        return v


class CrosslingualBuilder(_Builder):
    """Instruction in language A, answer required in language B, from instruction sets aligned by id (xLLMs-100)."""

    type: Literal["crosslingual"]
    sources: list[str] = Field(min_length=2)
    directions_per_item: int | None = Field(None, ge=1, description="ordered language pairs per item (None: all)")
    accepts: ClassVar[tuple[str, ...]] = INSTRUCTION_TYPES


class PreferenceBuilder(_Builder):
    """Cross-lingual preference pairs for DPO (xLLMs-100's feedback, simulated from parallel and aligned data)."""

    type: Literal["preference"]
    reasons: dict[Literal["off_target", "degraded"], float] = Field(
        default_factory=lambda: {"off_target": 0.5, "degraded": 0.5},
        description="how rejected answers are made; aligned instruction sets support off_target only",
    )
    to_non_english_share: float = Field(1.0, ge=0, le=1)
    templates: Templates = "all"
    accepts: ClassVar[tuple[str, ...]] = (*PARALLEL_TYPES, *INSTRUCTION_TYPES, "preference")


ENGLISH = "eng_Latn"


def parse_direction(value: str) -> tuple[str, str]:
    """`src->tgt` in any spelling `cluster.languages` knows -> (Flores code, Flores code)."""
    parts = value.split("->")
    if len(parts) != 2:
        raise ValueError(f"{value!r}: write a direction as src->tgt (e.g. en->de)")
    src, tgt = (_flores(x.strip()) for x in parts)
    if src == tgt:
        raise ValueError(f"{value!r}: source and target are the same language")
    return src, tgt


class RlBuilder(_Builder):
    """Translation prompts with their references for RL (GRPO): the policy writes the answers, rewards score them
    against the reference. Written to `rl/`, never mixed or packed with SFT."""

    type: Literal["rl"]
    directions: list[str] | Literal["english_centric"] = Field(
        "english_centric",
        description="`src->tgt` pairs, or english_centric: English to and from each of `languages`",
    )
    languages: list[LangCode] | None = Field(
        None, description="english_centric only: the non-English side (None: every language of the source)"
    )
    per_direction: int | None = Field(
        None, ge=1, description="at most N sentences per direction and source, drawn by seeded rank before the "
        "filters (rejected ones are counted, not replaced); None: every sentence",
    )
    skip_lines: int = Field(
        0, ge=0, description="draw from line skip_lines+1 on: keeps RL prompts off the lines SFT recipes use "
        "(their sources' `limit` takes the first lines)",
    )
    template: int = Field(
        0, ge=0, lt=len(prompts.TRANSLATION_TEMPLATES),
        description="prompts.TRANSLATION_TEMPLATES index; 0 is the one serving and evaluation send",
    )
    accepts: ClassVar[tuple[str, ...]] = PARALLEL_TYPES

    @field_validator("directions")
    @classmethod
    def _directions(cls, v: list[str] | str) -> list[str] | str:
        if v == "english_centric":
            return v
        pairs = [parse_direction(x) for x in v]
        if not pairs:
            raise ValueError("at least one direction (or english_centric)")
        if len(set(pairs)) != len(pairs):
            raise ValueError("a direction is listed twice")
        return [f"{a}->{b}" for a, b in pairs]

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        codes = [_flores(x) for x in v]
        if len(set(codes)) != len(codes):
            raise ValueError("listed twice")
        return codes

    @model_validator(mode="after")
    def _languages_need_english_centric(self) -> RlBuilder:
        if self.languages is not None and self.directions != "english_centric":
            raise ValueError("languages: only with directions: english_centric (explicit directions name theirs)")
        return self

    def pairs(self, source_languages: list[str]) -> list[tuple[str, str]]:
        """(src, tgt) in a fixed order: the listed directions, or English to and from each language."""
        if self.directions != "english_centric":
            return [parse_direction(d) for d in self.directions]
        others = [x for x in (self.languages or source_languages) if x != ENGLISH]
        return [p for x in others for p in ((ENGLISH, x), (x, ENGLISH))]


def _looks_like_flores(path: str) -> bool:
    return any(part.lower().startswith("flores") for part in PurePath(path).parts)


Builder = Annotated[
    InstructionsBuilder | TranslationBuilder | InteractiveBuilder | CrosslingualBuilder | PreferenceBuilder
    | RlBuilder,
    Field(discriminator="type"),
]
SFT_BUILDERS = ("instructions", "translation", "interactive", "crosslingual")


class LangIdFilter(Strict):
    enabled: bool = True
    min_confidence: float = Field(
        0.9, ge=0, le=1, description="reject only when the identifier is at least this sure of another language"
    )
    fields: list[Literal["prompt", "response", "source", "target", "rejected"]] = Field(
        default_factory=lambda: ["prompt", "response", "source", "target", "rejected"]
    )


class LengthFilter(Strict):
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(4000, ge=1)


class DedupFilter(Strict):
    exact: bool = True
    near: bool = True
    threshold: float = Field(0.9, gt=0, le=1, description="MinHash Jaccard threshold for near duplicates")
    num_perm: int = Field(64, ge=16, le=512)
    shingle: int = Field(5, ge=1, le=20, description="character n-gram size (works for unspaced scripts too)")


class Filters(Strict):
    langid: LangIdFilter = Field(default_factory=LangIdFilter)
    length: LengthFilter = Field(default_factory=LengthFilter)
    dedup: DedupFilter = Field(default_factory=DedupFilter)


class Mixing(Strict):
    ratios: dict[str, float] | None = Field(
        None, description="share of each SFT builder's output in the mixture (normalized); None: as built"
    )
    temperature: float = Field(
        1.0, gt=0, description="per-language sampling p ∝ n^(1/T) inside each builder; T>1 favours small languages"
    )
    total: int | None = Field(None, ge=1, description="SFT samples; None: the most reachable without repeats")
    seed: int = Field(0, description="the recipe's seed: template/direction choices and sampling")


class Shards(Strict):
    num_shards: int | None = Field(None, ge=1)
    samples_per_shard: int = Field(50_000, ge=1, description="used when num_shards is unset")


class RayExecution(Strict):
    """How the work is spread over the cluster; never changes the output."""

    chunk_records: int = Field(500, ge=1, description="source items per read/build task")
    task_cpus: float = Field(0.5, gt=0)
    tokenize_actors: int | None = Field(None, ge=1, description="None: fit the cluster, leaving a CPU for tasks")
    actor_cpus: float = Field(0.5, gt=0)
    batch_size: int = Field(256, ge=1, description="rows per tokenizer call inside a block")
    shuffle_blocks: int | None = Field(None, ge=1, description="blocks a group-wise stage shuffles; None: 2 per CPU")
    progress: bool = True


class PrepareRecipe(Strict):
    kind: Literal["prepare"] = "prepare"
    name: str = Field("dataset", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    model: str = Field("default", description="tokenizer source: 'default' (packaged Gemma 3 270M) or a folder")
    max_seq_len: int = Field(1024, ge=16)
    output_dir: str = "outputs/datasets"
    sources: dict[str, Source] = Field(default_factory=dict)
    builders: dict[str, Builder] = Field(default_factory=dict)
    filters: Filters = Field(default_factory=Filters)
    mixing: Mixing = Field(default_factory=Mixing)
    shards: Shards = Field(default_factory=Shards)
    ray: RayExecution = Field(default_factory=RayExecution)

    @model_validator(mode="after")
    def _consistent(self) -> PrepareRecipe:
        if not self.builders:
            raise ValueError("builders: at least one builder is required")
        for bname, b in self.builders.items():
            for s in b.sources:
                if s not in self.sources:
                    raise ValueError(f"builders.{bname}.sources: unknown source {s!r} (known: {sorted(self.sources)})")
                if self.sources[s].type not in b.accepts:
                    raise ValueError(
                        f"builders.{bname}.sources: {s!r} is a {self.sources[s].type} source; "
                        f"a {b.type} builder takes {', '.join(b.accepts)}"
                    )
            if b.type == "preference":
                inst = [s for s in b.sources if self.sources[s].type in INSTRUCTION_TYPES]
                if inst and (len(inst) < 2 or b.reasons.get("off_target", 0) <= 0):
                    raise ValueError(
                        f"builders.{bname}: preference pairs from instruction sets need at least two aligned sets "
                        "and reasons.off_target > 0 (the rejected answer is the other language's)"
                    )
            if b.type == "rl":
                self._no_flores_rl(bname, b)
        sft = [n for n, b in self.builders.items() if b.type in SFT_BUILDERS]
        if self.mixing.ratios is not None:
            for k, v in self.mixing.ratios.items():
                if k not in sft:
                    raise ValueError(f"mixing.ratios.{k}: not an SFT builder of this recipe (known: {sft})")
                if v < 0:
                    raise ValueError(f"mixing.ratios.{k}: must be >= 0")
            if not any(self.mixing.ratios.values()):
                raise ValueError("mixing.ratios: at least one ratio must be positive")
        if self.filters.length.min_chars > self.filters.length.max_chars:
            raise ValueError("filters.length: min_chars > max_chars")
        return self

    def _no_flores_rl(self, bname: str, b: RlBuilder) -> None:
        # RL optimizes the very metrics xalign reports on Flores: any Flores text in its prompts or references
        # would turn the evaluation into training data. Stricter than the all-source check (`flores200` only):
        # any folder or source name starting with "flores" is refused.
        for s in b.sources:
            if s.lower().startswith("flores"):
                raise ValueError(f"builders.{bname}.sources: {s!r} is named as Flores, the held-out evaluation "
                                 "set; RL prompts come from other parallel text (NTREX-128)")
            src = self.sources[s]
            for field in ("path", "src_path", "tgt_path"):
                path = getattr(src, field, None)
                if path is not None and _looks_like_flores(path):
                    raise ValueError(f"sources.{s}.{field}: {path} is Flores, the held-out evaluation set, and "
                                     f"never an RL source (builders.{bname})")

    def sft_builders(self) -> list[str]:
        return [n for n, b in self.builders.items() if b.type in SFT_BUILDERS]

    def identity(self) -> dict:
        """The recipe as it determines the data: without where it is written or how it is scheduled."""
        data = self.model_dump(mode="json")
        data.pop("output_dir")
        data.pop("ray")
        return data
