"""Request and response schemas of the HTTP API (published as OpenAPI at /docs and /openapi.json).

OpenAI-compatible chat/completions/models follow the OpenAI schema closely enough for the official
client; unknown request fields are errors naming the field rather than silently ignored options.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Response(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


# ---- errors ---------------------------------------------------------------------------------------


class ErrorBody(Response):
    message: str
    type: str  # invalid_request_error | authentication_error | not_found_error | timeout_error | engine_error ...
    param: str | None = None  # the request field at fault, e.g. "texts[3]" or "target_lang"
    code: str | None = None


class ErrorResponse(Response):
    error: ErrorBody
    request_id: str
    errors: list[ErrorBody] | None = None  # every problem, when a request has several


# ---- OpenAI: shared pieces ------------------------------------------------------------------------


class TextPart(Request):
    type: Literal["text"]
    text: str


class ChatMessage(Request):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(Request):
    include_usage: bool = False


class SamplingFields(Request):
    """The sampling parameters both OpenAI endpoints share (plus vLLM's top_k and repetition_penalty)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        items = [v] if isinstance(v, str) else v
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences")
        return items


class Usage(Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens = self.prompt_tokens + self.completion_tokens


# ---- chat completions -----------------------------------------------------------------------------


class ChatCompletionRequest(SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("logprobs are not supported by this server")
        return v

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatChoiceMessage(Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(Response):
    index: int
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(Response):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


# ---- completions ----------------------------------------------------------------------------------


class CompletionRequest(SamplingFields):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for this endpoint
    echo: bool = False

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


class CompletionChoice(Response):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# ---- models ---------------------------------------------------------------------------------------


class ModelCard(Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "xalign"
    root: str  # the base model's name
    parent: str | None = None  # set for LoRA adapters


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- translation ----------------------------------------------------------------------------------

FollowUpKind = Literal["formal", "shorter", "retarget"]


class TranslateRequest(Request):
    """A fresh translation (`text` or `texts`), or a follow-up turn (`instruction`/`follow_up`) on a
    conversation supplied by the client (`history`) or kept by the server (`session_id`)."""

    text: str | None = None
    texts: list[str] | None = None
    target_lang: str | None = None  # required, except for follow-ups in a session (default: the session's)
    source_lang: str | None = None  # detected per item when absent
    model: str | None = None  # base model or adapter name (default: base)
    # Interactive refinement.
    instruction: str | None = None  # free-text follow-up, e.g. "make it more formal"
    follow_up: FollowUpKind | None = None  # a canned follow-up from the shared prompt module
    history: list[ChatMessage] | None = None  # prior turns, as returned in `messages` by the last answer
    session_id: str | None = None
    session: bool = False  # keep this conversation server-side and return its session_id
    # Generation.
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    guard: bool | None = None  # override the server's off-target guard for this request

    @model_validator(mode="after")
    def _shape(self) -> TranslateRequest:
        fresh = self.text is not None or self.texts is not None
        refine = self.instruction is not None or self.follow_up is not None
        if self.text is not None and self.texts is not None:
            raise ValueError("text: send either text or texts, not both")
        if self.texts is not None and not self.texts:
            raise ValueError("texts: at least one text is required")
        if fresh and refine:
            raise ValueError("instruction: a follow-up continues a conversation; send it without text/texts")
        if not fresh and not refine:
            raise ValueError("text: required (or texts, or a follow-up: instruction/follow_up with history/session_id)")
        if self.session_id is not None and not refine:
            raise ValueError("session_id: a session continues with a follow-up (instruction or follow_up); "
                             "start one with text and session: true")
        if self.history is not None and not refine:
            raise ValueError("history: history goes with a follow-up (instruction or follow_up)")
        if refine and self.history is None and self.session_id is None:
            raise ValueError("history: a follow-up needs the conversation: history or session_id")
        if self.history is not None and self.session_id is not None:
            raise ValueError("history: send either history or session_id, not both")
        if self.instruction is not None and self.follow_up is not None:
            raise ValueError("follow_up: send either instruction or follow_up, not both")
        if self.texts is not None and (self.session or self.session_id):
            raise ValueError("texts: a session holds one conversation; send a single text")
        if self.target_lang is None and self.session_id is None:
            raise ValueError("target_lang: field required")
        return self

    @property
    def is_follow_up(self) -> bool:
        return self.instruction is not None or self.follow_up is not None

    def items(self) -> list[str]:
        if self.texts is not None:
            return list(self.texts)
        return [self.text] if self.text is not None else []


class LanguageInfo(Response):
    code: str  # ISO 639-1 where one exists, else ISO 639-3
    flores: str
    name: str
    confidence: float | None = None  # set when detected
    detected: bool = False


class GuardReport(Response):
    checked: bool  # language ID ran on the output
    action: Literal["none", "retried", "flagged", "off"]  # flagged: off-target and no retry allowed
    retry_strategy: Literal["strict", "fix"] | None = None
    first_output: str | None = None  # the rejected first answer, when retried
    first_output_lang: str | None = None
    recovered: bool | None = None  # after a retry: is the final answer on target


class TranslationItem(Response):
    index: int
    translation: str
    source_lang: LanguageInfo | None
    target_lang: LanguageInfo
    output_lang: LanguageInfo | None  # None when the output is too short to identify
    off_target: bool | None  # None when undetermined
    guard: GuardReport
    finish_reason: str | None
    usage: Usage


class TranslateResponse(Response):
    id: str
    model: str
    items: list[TranslationItem]
    translations: list[str]
    session_id: str | None = None
    session_expires_in_s: float | None = None
    messages: list[ChatMessage] | None = None  # the conversation so far (send it back as `history`)
    usage: Usage


class SessionView(Response):
    session_id: str
    model: str
    source_lang: str | None
    target_lang: str
    messages: list[ChatMessage]
    turns: int
    expires_in_s: float
