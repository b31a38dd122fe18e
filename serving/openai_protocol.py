"""The OpenAI-compatible requests: vLLM's protocol models, narrowed to what xalign serves.

Responses, streaming chunks, usage and the model list are vLLM's models as they are (serving.routes.openai).
The requests subclass vLLM's: xalign encodes prompts itself (`cluster.prompts`, text turns only) and answers
with text, so a field vLLM knows that asks for anything else (tools, logprobs, structured outputs, beam
search, ...) is refused with a 4xx naming it rather than ignored, and the published schema lists only the
fields served. Sampling fields reach the engine through vLLM's own `to_sampling_params`.

Validation is strict and covers what the engine checks later (where a failure used to be a 5xx): no type
coercion, no NaN or infinity, every string valid Unicode (serving.text_checks), non-empty stop strings, and
the engine's integer ranges (a seed is a signed 64-bit integer).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from vllm.entrypoints.generate.base.protocol import StreamOptions as _StreamOptions
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as _ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest as _CompletionRequest

from serving import text_checks
from serving.translate_schemas import TextMessage

MAX_STOP = 4  # stop sequences per request, as OpenAI allows
INT64 = (-(2**63), 2**63 - 1)  # what the engine's transport and torch's generators take
INT32_MAX = 2**31 - 1  # counts (tokens, choices, top_k): far above any limit, far below an overflow
StopString = Annotated[str, Field(min_length=1)]  # the engine refuses an empty stop string
# The fields both endpoints serve; every other field vLLM's requests know is refused.
SAMPLING_FIELDS = frozenset({
    "model", "temperature", "top_p", "top_k", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "ignore_eos", "max_tokens", "stream", "stream_options", "user",
})


def _served_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Publish only the served fields: the others are refused, so the schema does not offer them."""
    served: frozenset[str] = cls.SERVED  # type: ignore[attr-defined]
    schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k in served}
    schema["required"] = [k for k in schema.get("required", []) if k in served]


class _Narrowed(BaseModel):
    """A vLLM model narrowed to the fields in SERVED: unknown fields are errors naming the field (vLLM's own
    models accept and ignore them), and a field vLLM knows but xalign does not serve is refused by name."""

    # Set again on each subclass: pydantic merges configs base by base, so vLLM's extra="allow" would win.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra=_served_schema,
                              strict=True, allow_inf_nan=False)
    SERVED: ClassVar[frozenset[str]]

    @model_validator(mode="before")
    @classmethod
    def _refuse_unserved(cls, data: Any) -> Any:
        # Runs before vLLM's own checks, which then only ever see served fields.
        text_checks.check_encodable(data)
        if isinstance(data, dict):
            unserved = [k for k in data if k in cls.model_fields and k not in cls.SERVED]
            if unserved:
                raise ValueError(f"{unserved[0]}: not supported by this server")
        return data


class StreamOptions(_Narrowed, _StreamOptions):
    model_config = _Narrowed.model_config
    SERVED = frozenset({"include_usage"})


class _Sampling(_Narrowed):
    """What both requests narrow besides the fields: the model is required and OpenAI's documented ranges
    are enforced (vLLM checks some of them only when it builds the sampling parameters)."""

    model: str  # vLLM's is optional (the served model); xalign serves several, so the client names one
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=INT32_MAX)
    n: int = Field(1, ge=1, le=INT32_MAX)
    seed: int | None = Field(None, ge=INT64[0], le=INT64[1])
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _stop_strings(cls, data: Any) -> Any:
        # Before the type checks, so an empty string in a list is named by its index (the union of a string and
        # a list would otherwise report the string branch first).
        stop = data.get("stop") if isinstance(data, dict) else None
        if stop == "":
            raise ValueError("stop: an empty stop string would end every answer at once")
        if isinstance(stop, list):
            if len(stop) > MAX_STOP:
                raise ValueError(f"stop: at most {MAX_STOP} stop sequences")
            empty = next((i for i, s in enumerate(stop) if s == ""), None)
            if empty is not None:
                raise ValueError(f"stop[{empty}]: an empty stop string would end every answer at once")
        return data


class ChatCompletionRequest(_Sampling, _ChatCompletionRequest):
    model_config = _Narrowed.model_config
    SERVED = SAMPLING_FIELDS | {"messages", "max_completion_tokens", "logprobs"}

    messages: list[TextMessage] = Field(min_length=1)  # text turns: what cluster.prompts encodes
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)

    @model_validator(mode="before")
    @classmethod
    def _text_turns(cls, data: Any) -> Any:
        # vLLM's own checks walk the raw messages (tool calls, content parts): refuse anything but a list of
        # text turns before they run.
        if isinstance(data, dict) and "messages" in data:
            messages = data["messages"]
            if not isinstance(messages, list):
                raise ValueError("messages: a list of messages is required")
            for i, m in enumerate(messages):
                unknown = sorted(set(m) - set(TextMessage.model_fields)) if isinstance(m, dict) else []
                if unknown:
                    raise ValueError(f"messages[{i}].{unknown[0]}: unknown field")
        return data

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("not supported by this server")
        return v

    @property
    def output_limit(self) -> tuple[int | None, str]:
        """The requested output length and the field it came from (max_completion_tokens wins)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.__dict__["max_tokens"], "max_tokens"  # past vLLM's deprecation warning: OpenAI still takes it

    def text_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Sampling, _CompletionRequest):
    model_config = _Narrowed.model_config
    SERVED = SAMPLING_FIELDS | {"prompt", "echo"}

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1, le=INT32_MAX)  # OpenAI's default for this endpoint

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("at least one prompt is required")
        return v

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

