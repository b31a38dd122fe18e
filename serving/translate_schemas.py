"""Request and response schemas of xalign's translation API (/v1/translate, /v1/sessions), published as OpenAPI
at /docs and /openapi.json. Unknown request fields are errors naming the field, not silently ignored options.

Requests are validated strictly (no type coercion: `"8"` and `true` are not integers; no NaN or infinity) and
every string must be valid Unicode text (serving.text_checks), so nothing the engine would fail on gets past them.

`TextMessage` is the conversation turn xalign's prompt module encodes (system/user/assistant, text only): a
translation's `history` and `messages`, and the OpenAI chat route's `messages` (serving.openai_protocol).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving import text_checks


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        return text_checks.check_encodable(data)


class Response(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


class TextPart(Request):
    type: Literal["text"]
    text: str


class TextMessage(Request):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class Usage(Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens = self.prompt_tokens + self.completion_tokens


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
    history: list[TextMessage] | None = None  # prior turns, as returned in `messages` by the last answer
    session_id: str | None = None
    session: bool = False  # keep this conversation server-side and return its session_id
    # Generation.
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    # >1 discourages repeating tokens (loops); 1.0 = off; unset: the server's default (sampling.repetition_penalty)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
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
    messages: list[TextMessage] | None = None  # the conversation so far (send it back as `history`)
    usage: Usage


class SessionView(Response):
    session_id: str
    model: str
    source_lang: str | None
    target_lang: str
    messages: list[TextMessage]
    turns: int
    expires_in_s: float
