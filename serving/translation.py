"""Translation requests: fresh (single or batched), and follow-up turns on a conversation kept by the client
(`history`) or the server (`session_id`). Every output goes through the off-target guard.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cluster import langid, languages, prompts
from cluster.languages import Language
from serving import errors, guard, text_checks
from serving.generation import Deadline, Generator
from serving.metrics import Metrics
from serving.recipe import GuardSettings, LimitSettings
from serving.session_client import SessionClient
from serving.translate_schemas import (
    GuardReport,
    LanguageInfo,
    TextMessage,
    TranslateRequest,
    TranslateResponse,
    TranslationItem,
    Usage,
)


def resolve_language(code: str, param: str) -> Language:
    try:
        return languages.get(code)
    except languages.UnknownLanguageError as exc:
        raise errors.invalid(param, f"{param}: {exc}") from None


def language_info(lang: Language, confidence: float | None = None, detected: bool = False) -> LanguageInfo:
    return LanguageInfo(code=lang.code, flores=lang.flores, name=lang.name, detected=detected,
                        confidence=None if confidence is None else round(confidence, 4))


def detected_info(verdict: guard.Verdict) -> LanguageInfo | None:
    det = verdict.detection
    if det is None:
        return None
    if det.flores is None:  # a language the table does not list: report the identifier's own label
        return LanguageInfo(code=det.label or "und", flores=det.label or "und", name=det.label or "unknown",
                            confidence=round(det.confidence, 4), detected=True)
    return language_info(languages.get(det.flores), det.confidence, detected=True)


@dataclass
class Job:
    """One conversation to answer: the messages, and what the guard needs to re-ask it."""

    index: int
    param: str  # the request field this item came from, for errors
    messages: list[dict[str, str]]
    ids: list[int]
    target: Language
    source: LanguageInfo | None
    first_turn: guard.FirstTurn | None


class Translator:
    def __init__(self, generator: Generator, sessions: SessionClient, guard_settings: GuardSettings,
                 limits: LimitSettings, metrics: Metrics) -> None:
        self.gen, self.sessions, self.guard, self.limits, self.metrics = (
            generator, sessions, guard_settings, limits, metrics)

    async def translate(self, req: TranslateRequest, request_id: str, deadline: Deadline) -> TranslateResponse:
        lora = self.gen.lora_for(req.model)
        model = req.model or self.gen.base_name
        session: dict[str, Any] | None = None
        if req.is_follow_up:
            job, session = await self._follow_up_job(req)
            if req.model is None and session is not None:
                model, lora = session["model"], self.gen.lora_for(session["model"])
            jobs = [job]
        else:
            jobs = self._fresh_jobs(req)
        max_tokens = [self.gen.output_budget(j.ids, req.max_tokens) for j in jobs]  # all checks before any work
        use_guard = self.guard.enabled if req.guard is None else req.guard
        items = await asyncio.gather(*(
            self._run(j, mt, lora, model, f"{request_id}-{j.index}", deadline, use_guard, req)
            for j, mt in zip(jobs, max_tokens)
        ))
        usage = Usage()
        for it in items:
            usage.add(it.usage.prompt_tokens, it.usage.completion_tokens)
        resp = TranslateResponse(id=f"tr-{request_id}", model=model, items=list(items),
                                 translations=[it.translation for it in items], usage=usage)
        if len(jobs) == 1:
            conversation = [*jobs[0].messages, {"role": "assistant", "content": items[0].translation}]
            resp.messages = [TextMessage(**m) for m in conversation]
            target = jobs[0].target.flores
            if session is not None:
                stored = await self.sessions.call("append", session["session_id"], conversation, target, model)
            elif req.session:
                source = jobs[0].source.flores if jobs[0].source else None
                stored = await self.sessions.call("create", model, source, target, conversation)
            else:
                stored = None
            if stored is not None:
                resp.session_id, resp.session_expires_in_s = stored["session_id"], stored["expires_in_s"]
        return resp

    # ---- building the prompts ----------------------------------------------------------------------

    def _fresh_jobs(self, req: TranslateRequest) -> list[Job]:
        texts = req.items()
        batched = req.texts is not None
        if len(texts) > self.limits.max_batch_items:
            raise errors.invalid("texts", f"texts: {len(texts)} items; the limit is {self.limits.max_batch_items} "
                                          "(limits.max_batch_items)", status=413)
        assert req.target_lang is not None  # the schema requires it without a session
        target = resolve_language(req.target_lang, "target_lang")
        fixed = resolve_language(req.source_lang, "source_lang") if req.source_lang else None
        jobs = []
        for i, text in enumerate(texts):
            param = f"texts[{i}]" if batched else "text"
            if text_checks.is_blank(text):
                raise errors.invalid(param, f"{param}: empty text (nothing but whitespace or invisible characters)")
            if fixed is not None:
                source, info = fixed, language_info(fixed)
            else:
                source, info = self._detect_source(text, param)
            if source.flores == target.flores:
                # Nothing to translate; the model would answer with a paraphrase or parts of its prompt.
                if fixed is not None:
                    raise errors.invalid("target_lang", f"target_lang: the same language as source_lang "
                                                        f"({target.flores}); nothing to translate")
                raise errors.invalid("source_lang", f"source_lang: {param} was detected as {target.name} "
                                                    f"({target.flores}), the target language; pass source_lang if "
                                                    "it is another language")
            messages = prompts.translation_messages(source.flores, target.flores, text)
            ids = self.gen.encode_chat(messages)
            self.gen.check_prompt(ids, param)
            jobs.append(Job(i, param, messages, ids, target, info, guard.FirstTurn(source.flores, text)))
        return jobs

    @staticmethod
    def _detect_source(text: str, param: str) -> tuple[Language, LanguageInfo]:
        det = langid.detect(text)
        if det.flores is None:
            why = "too short to identify" if det.label is None else f"identified as {det.label!r}, not in the table"
            raise errors.invalid("source_lang", f"source_lang: could not detect the language of {param} ({why}); "
                                                "pass source_lang")
        lang = languages.get(det.flores)
        return lang, language_info(lang, det.confidence, detected=True)

    async def _follow_up_job(self, req: TranslateRequest) -> tuple[Job, dict[str, Any] | None]:
        session = None
        if req.session_id is not None:
            session = await self.sessions.call("get", req.session_id, True)
            history = session["messages"]
            target = resolve_language(req.target_lang or session["target_lang"], "target_lang")
            src_code = req.source_lang or session["source_lang"]
        else:
            history = [{"role": m.role, "content": m.text()} for m in req.history or []]
            assert req.target_lang is not None
            target = resolve_language(req.target_lang, "target_lang")
            src_code = req.source_lang
            try:
                prompts.validate_messages(history)
            except ValueError as exc:
                raise errors.invalid("history", f"history{str(exc).removeprefix('messages')}") from None
            if not history or history[-1]["role"] != "assistant":
                raise errors.invalid("history", "history: must end with the assistant's last answer")
        source = resolve_language(src_code, "source_lang") if src_code else None
        instruction = req.instruction
        if instruction is None:
            instruction = prompts.follow_up(str(req.follow_up), target.flores)
        if text_checks.is_blank(instruction):
            raise errors.invalid("instruction", "instruction: empty follow-up")
        messages = [*history, {"role": "user", "content": instruction}]
        ids = self.gen.encode_chat(messages)
        self.gen.check_prompt(ids, "history" if req.history is not None else "session_id")
        job = Job(0, "instruction", messages, ids, target, language_info(source) if source else None, None)
        return job, session

    # ---- generating, with the guard ----------------------------------------------------------------

    async def _run(self, job: Job, max_tokens: int, lora: Any, model: str, rid: str, deadline: Deadline,
                   use_guard: bool, req: TranslateRequest) -> TranslationItem:
        params = self.gen.sampling(max_tokens=max_tokens, temperature=req.temperature,
                                   repetition_penalty=req.repetition_penalty)
        first = await self.gen.generate(job.ids, params, lora, rid, deadline)
        usage = Usage()
        usage.add(first.prompt_tokens, first.completion_tokens)
        text, finish = first.outputs[0].text.strip(), first.outputs[0].finish_reason
        verdict = guard.check(text, job.target.flores)
        tgt = job.target.flores
        self.metrics.translations.labels(target=tgt).inc()
        report = GuardReport(checked=verdict.on_target is not None, action="none" if use_guard else "off")
        if verdict.off_target:
            self.metrics.off_target.labels(stage="first", target=tgt).inc()
        if use_guard and verdict.off_target:
            retry = self._retry_prompt(job, text) if self.guard.retry else None
            if retry is None:
                report.action = "flagged"
            else:
                _, strategy, ids = retry
                budget = min(max_tokens, self.gen.max_model_len - len(ids))
                params = self.gen.sampling(max_tokens=budget, temperature=req.temperature,
                                           repetition_penalty=req.repetition_penalty)
                second = await self.gen.generate(ids, params, lora, f"{rid}-retry", deadline)
                usage.add(second.prompt_tokens, second.completion_tokens)
                report = GuardReport(checked=True, action="retried", retry_strategy=strategy, first_output=text,
                                     first_output_lang=verdict.label)
                text, finish = second.outputs[0].text.strip(), second.outputs[0].finish_reason
                verdict = guard.check(text, tgt)
                report.recovered = verdict.on_target
                outcome = {True: "recovered", False: "still_off_target", None: "undetermined"}[verdict.on_target]
                self.metrics.guard_retries.labels(outcome=outcome).inc()
        if verdict.off_target:
            self.metrics.off_target.labels(stage="final", target=tgt).inc()
        self.metrics.count_tokens(model, usage.prompt_tokens, usage.completion_tokens)
        return TranslationItem(
            index=job.index, translation=text, source_lang=job.source, target_lang=language_info(job.target),
            output_lang=detected_info(verdict), off_target=verdict.off_target, guard=report, finish_reason=finish,
            usage=usage,
        )

    def _retry_prompt(self, job: Job, bad_output: str) -> tuple[list[dict[str, str]], guard.Strategy, list[int]] | None:
        messages, strategy = guard.retry_messages(job.messages, bad_output, job.target.flores, self.guard.strategy,
                                                  job.first_turn)
        ids = self.gen.encode_chat(messages)
        if len(ids) > self.limits.max_input_tokens or len(ids) >= self.gen.max_model_len - 1:
            return None  # no room to re-ask: report the off-target answer instead
        return messages, strategy, ids
