"""The `serve` recipe: which model and adapters to host, how the Serve deployment scales, and the API's limits.

One recipe drives `xalign serve`, `serve run serving.app:build` and the RayService `serveConfigV2`
(`serving.serve_config`), so a laptop, CI and a cluster run the same deployment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cluster.config import Strict, apply_overrides, load_recipe, validate
from cluster.engine import EngineSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class AutoscalingSettings(Strict):
    """Ray Serve autoscaling (replaces `num_replicas`); passed through as the deployment's autoscaling_config."""

    min_replicas: int = Field(1, ge=0)
    initial_replicas: int | None = Field(None, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(600, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


class DeploymentSettings(Strict):
    """The engine replica: one vLLM engine per replica, behind Ray Serve's HTTP proxy."""

    num_replicas: int = Field(1, ge=1)  # ignored when `autoscaling` is set
    autoscaling: AutoscalingSettings | None = None
    max_ongoing_requests: int = Field(64, gt=0)
    num_cpus: float = Field(1.0, ge=0)  # keep <= 1 on small CPU machines: the proxy and controller need room
    num_gpus: float = Field(0.0, ge=0)
    # Custom Ray resources of a replica: `{xalign-head: 0.01}` pins it to a node started with that resource
    # (`xalign cluster up`), e.g. a serving node pool that does not train.
    resources: dict[str, float] = Field(default_factory=dict)
    health_check_period_s: float = Field(10, gt=0)
    health_check_timeout_s: float = Field(30, gt=0)
    graceful_shutdown_timeout_s: float = Field(20, ge=0)
    env_vars: dict[str, str] = Field(default_factory=dict)  # extra environment of the replica (e.g. OMP_NUM_THREADS)

    @field_validator("env_vars")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if "KEY" in k.upper() or "TOKEN" in k.upper() or "SECRET" in k.upper()]
        if bad:
            raise ValueError(f"{bad[0]}: secrets do not belong in a recipe; set them in the replica's environment")
        return v

    def options(self) -> dict[str, Any]:
        """Ray Serve deployment options."""
        opts: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.resources:
            opts["ray_actor_options"]["resources"] = dict(self.resources)
        if self.env_vars:
            opts["ray_actor_options"]["runtime_env"] = {"env_vars": dict(self.env_vars)}
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


class LimitSettings(Strict):
    """Request limits; a request over any of them gets a 4xx JSON error naming the field."""

    max_input_tokens: int = Field(768, gt=0)  # the rendered prompt, per item
    max_output_tokens: int = Field(512, gt=0)  # upper bound on max_tokens
    default_max_tokens: int = Field(256, gt=0)  # chat and translate, when the request names none
    max_batch_items: int = Field(32, gt=0)  # texts per translate call, prompts per completions call
    max_n: int = Field(4, gt=0)  # choices per prompt
    max_body_bytes: int = Field(1_000_000, gt=0)
    request_timeout_s: float = Field(120, gt=0)  # whole request, streaming included


class SamplingDefaults(Strict):
    """Decoding defaults for requests that leave a field unset (/v1/translate, chat and completions alike)."""

    # >1 discourages tokens already in the prompt or the answer: it breaks the loops a small model falls into
    # ("ya kwanza ya kwanza ya kwanza ..."); a request's own `repetition_penalty` wins. 1.0 turns it off.
    repetition_penalty: float = Field(1.1, gt=0, le=2)


class GuardSettings(Strict):
    """Off-target guard on translations: language ID on every output, one retry with a stronger instruction."""

    enabled: bool = True
    retry: bool = True
    # strict: ask again with the strict instruction; fix: show the model its answer and ask for a fix.
    # Follow-up turns always use `fix` (their instruction is the user's, not a template).
    strategy: Literal["strict", "fix"] = "strict"


class SessionSettings(Strict):
    ttl_s: float = Field(1800, gt=0)  # idle time after which a session expires
    max_sessions: int = Field(10_000, gt=0)  # least recently used sessions are evicted beyond this
    max_turns: int = Field(16, gt=0)  # follow-ups per session


class AuthSettings(Strict):
    """Optional API key: on when the named environment variable holds a key (a Kubernetes secret, say)."""

    api_key_env: str | None = "XALIGN_API_KEY"
    required: bool = False  # refuse to start when the variable is empty (fail closed in production)


class HttpSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    route_prefix: str = "/"
    cors_origins: list[str] = Field(default_factory=list)  # empty: CORS off

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class ServeRecipe(Strict):
    kind: Literal["serve"] = "serve"
    name: str = "xalign"  # Serve application name
    engine: EngineSettings = Field(default_factory=EngineSettings)
    served_model_name: str | None = None  # the base model's name in the API (default: from engine.model)
    adapters: dict[str, str] = Field(default_factory=dict)  # LoRA adapters: API model name -> folder
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"{name!r}: adapter names are letters, digits and ._:/- (at most 128)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ServeRecipe:
        if self.adapters and not self.engine.enable_lora:
            self.engine.enable_lora = True  # adapters imply LoRA; saying it twice is not required
        if self.base_model_name in self.adapters:
            raise ValueError(f"adapters.{self.base_model_name}: an adapter cannot share the base model's name")
        if self.limits.max_input_tokens >= self.engine.max_model_len:
            raise ValueError(
                f"limits.max_input_tokens ({self.limits.max_input_tokens}) must be below engine.max_model_len "
                f"({self.engine.max_model_len}) to leave room for output"
            )
        return self

    @property
    def base_model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        from cluster.models import DEFAULT_MODEL, is_default

        spec = self.engine.model
        return DEFAULT_MODEL if is_default(spec) else Path(spec.rstrip("/")).name or spec


def load_serve_recipe(recipe: str | Path | None, overrides: list[str] | None = None) -> ServeRecipe:
    """`cluster.config.load_recipe` for the serve recipe."""
    return load_recipe(ServeRecipe, recipe, overrides)


class ServeArgs(Strict):
    """The Serve application's `args` (a serveConfigV2 / `serve deploy` file, `serve run serving.app:build
    recipe=NAME`): the recipe, as a name or path under recipes/ or inline as a mapping (the resolved recipe
    `xalign serve --print-config` writes), and `key.sub=value` overrides in the grammar of the xalign command
    line (what the Helm chart writes)."""

    recipe: str | dict[str, Any] | None = None
    overrides: list[str] = Field(default_factory=list)


def from_args(args: dict[str, Any] | None) -> ServeRecipe:
    """The recipe a Serve application's `args` describe (see `ServeArgs`); unknown keys are errors naming them."""
    spec = validate(ServeArgs, dict(args or {}), "<serve application args>")
    if isinstance(spec.recipe, dict):
        return validate(ServeRecipe, apply_overrides(spec.recipe, spec.overrides), "<serve application args>")
    return load_recipe(ServeRecipe, spec.recipe, spec.overrides)
