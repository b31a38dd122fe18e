"""The evaluation recipe (`kind: evaluate`): one benchmark suite plus how to generate and score it.

A suite names one test set (Flores-200, WMT22, NTREX-128 or a generic TSV/JSONL file), the
directions to run (explicit pairs or groups such as `en->X`) and the languages `X` ranges over.
Generation runs either in Ray Data with vLLM engine actors or against a running endpoint; the
`xalign evaluate` flags (`--model`, `--endpoint`, `--comet-model`, ...) are spellings of keys here
(`engine.model`, `endpoint.url`, `metrics.comet_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cluster.config import Strict, validate
from cluster.engine import EngineSettings
from evaluation.metrics.settings import MetricsSettings

TestSetFormat = Literal["flores200", "wmt22", "ntrex128", "tsv", "jsonl"]
RESOURCE_SETS = ("high-resource", "low-resource")


class TestSet(Strict):
    format: TestSetFormat
    path: str  # relative to the data root (or absolute)
    references: Literal["primary", "all"] = "primary"  # WMT22: ref.txt only, or every ref.*.txt too


class GenerationSettings(Strict):
    """Offline batch inference: Ray Data feeds batches to `concurrency` actors that each hold an engine."""

    batch_size: int = Field(64, gt=0)
    concurrency: int = Field(1, gt=0)
    num_cpus: float = Field(1.0, ge=0)  # per engine actor
    num_gpus: float = Field(0.0, ge=0)  # per engine actor; 1 on a GPU cluster
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0)
    # vLLM's repetition penalty (>1 discourages tokens already in the prompt or the answer); 1.0 = off, so greedy
    # scores measure the model alone. Sent explicitly to endpoints too: xalign serve's default (1.1) is not used.
    repetition_penalty: float = Field(1.0, gt=0)
    # chat: the translation instruction in the shared chat template (what serving and training use);
    # few_shot: `cluster.prompts.few_shot_prompt`, plain text, the reference point for a base model.
    prompt: Literal["chat", "few_shot"] = "chat"
    template: int = Field(0, ge=0)  # chat: cluster.prompts.TRANSLATION_TEMPLATES index; 0 is what serving uses
    shots: int = Field(3, ge=1, le=16)  # few_shot: examples, held out from the end of each direction's test data
    # A crashed engine actor is restarted and its batch retried (Ray Data's actor pool); -1 = no limit.
    max_restarts: int = Field(-1, ge=-1)

    @field_validator("template")
    @classmethod
    def _template_exists(cls, t: int) -> int:
        from cluster.prompts import TRANSLATION_TEMPLATES

        if t >= len(TRANSLATION_TEMPLATES):
            raise ValueError(f"no translation template {t} (there are {len(TRANSLATION_TEMPLATES)})")
        return t


class EndpointSettings(Strict):
    url: str | None = None  # e.g. http://127.0.0.1:8000 (xalign serve or any OpenAI-compatible server)
    api: Literal["chat", "translate"] = "chat"  # /v1/chat/completions or xalign's /v1/translate
    model: str | None = None  # served model name; default: the first of GET /v1/models
    concurrency: int = Field(8, gt=0)  # requests in flight
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(3, ge=0)
    api_key_env: str = "XALIGN_API_KEY"  # sent as a bearer token when set
    guard: bool | None = False  # translate API: the server's off-target guard (None: the server's default)


class EvalRecipe(Strict):
    kind: Literal["evaluate"] = "evaluate"
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data_root: str | None = None  # default: cluster.locations.data_root() (XALIGN_DATA or ../shared/data)
    test_set: TestSet
    # Explicit pairs (`de->en`, `de-en`) and/or groups over `languages`: en->X, X->en, zh->X, X->zh.
    directions: list[str] = Field(min_length=1)
    # What X ranges over: codes in any spelling, or high-resource / low-resource (those the test set has).
    languages: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, gt=0)  # first N segments per direction
    engine: EngineSettings = EngineSettings()  # engine.model is the model (`--model`)
    generation: GenerationSettings = GenerationSettings()
    endpoint: EndpointSettings = EndpointSettings()
    metrics: MetricsSettings = MetricsSettings()
    bootstrap_samples: int = Field(1000, gt=0)  # paired bootstrap resamples (compare)
    output_dir: str = "outputs/reports"
    run_id: str | None = None  # default: <timestamp>-<suite>-<model>
    # Rerun `run_id`: directions whose generations finished are kept, only the rest are generated.
    resume: bool = False

    @model_validator(mode="after")
    def _comet_needs_a_model(self) -> EvalRecipe:
        if "comet" in self.metrics.names and not self.metrics.comet_model:
            raise ValueError("metrics.names includes comet but metrics.comet_model is not set (--comet-model PATH)")
        if self.metrics.comet_model and "comet" not in self.metrics.names:
            self.metrics.names.append("comet")  # a checkpoint given is a checkpoint to score with
        return self

    @model_validator(mode="after")
    def _resume_needs_a_run_id(self) -> EvalRecipe:
        if self.resume and not self.run_id:
            raise ValueError("resume: needs run_id (the run to resume; --resume RUN_ID)")
        return self

    def for_model(self, model: str | Path, directions: list[str], *, limit: int | None, output_dir: str | Path,
                  run_id: str | None = None, prompt: Literal["chat", "few_shot"] | None = None) -> EvalRecipe:
        """This suite aimed at one model on chosen directions (how the demo and `evaluate_model` use a suite): a new
        recipe validated again, so a bad value is a RecipeError naming its key. `run_id`/`prompt` None: the
        suite's own."""
        update: dict = {"engine": self.engine.model_copy(update={"model": str(model)}),
                        "directions": list(directions), "limit": limit, "output_dir": str(output_dir)}
        if run_id is not None:
            update["run_id"] = run_id
        if prompt is not None:
            update["generation"] = self.generation.model_copy(update={"prompt": prompt})
        return validate(EvalRecipe, self.model_copy(update=update).model_dump(), f"suite {self.name} for {model}")
