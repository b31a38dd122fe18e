"""Readers with schema validation: every malformed input is an error naming the file and line.

Positions are what work units slice: the item index of a JSON array, the 0-based line index of JSONL and
plain-text files. Readers return only the slice a unit asks for, so a task never holds more than its chunk
(aligned-by-id lookups load a whole instruction file once per worker process). A JSON array is indexed (item
byte offsets and lines) once per process, so each unit decodes its own items only.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cluster import languages, prompts
from cluster.locations import REPO_ROOT, data_root


class InputError(ValueError):
    """Malformed input data; the message starts with `file:line:`."""


def display_path(path: str | Path) -> str:
    """How inputs are named in errors, rejects and the manifest: relative to the data root when inside it."""
    p = Path(path)
    for base in (data_root(required=False), REPO_ROOT):
        if base is not None:
            try:
                return p.resolve().relative_to(base).as_posix()
            except ValueError:
                continue
    return p.as_posix()


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF8_BOM = b"\xef\xbb\xbf"


def check_line(path: str | Path, line: int, raw: bytes) -> str:
    """One line's text, or an InputError naming the file and line for bytes that are not UTF-8 text."""
    if line == 1 and raw.startswith(_UTF16_32_BOMS):
        raise InputError(f"{display_path(path)}:1: UTF-16/UTF-32 text (byte-order mark); xalign reads UTF-8 only: "
                         "convert it, e.g. `iconv -f UTF-16 -t UTF-8`")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{display_path(path)}:{line}: NUL byte at byte {nul + 1} of the line: binary data or "
                         "UTF-16 text without a byte-order mark (xalign reads UTF-8 only)")
    if line == 1 and raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{display_path(path)}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start + 1} of the "
                         "line): re-encode the file as UTF-8") from None


def scan_file(path: str | Path) -> tuple[str, int]:
    """sha256 and line count in one streaming pass, checking that every line is UTF-8 text (a last line
    without a newline counts). Bad bytes fail here, in the driver, before any task runs."""
    h = hashlib.sha256()
    lines = 0
    with open(path, "rb") as fh:
        for raw in fh:
            h.update(raw)
            lines += 1
            check_line(path, lines, raw)
    return h.hexdigest(), lines


def read_lines(path: str | Path, start: int, stop: int) -> list[tuple[int, str]]:
    """Lines [start, stop) as (1-based line number, text without the line break)."""
    out = []
    with open(path, "rb") as fh:
        for i, raw in enumerate(islice(fh, start, stop), start=start):
            out.append((i + 1, check_line(path, i + 1, raw).rstrip("\r\n")))
    return out


# ---- instruction files ------------------------------------------------------------------------------


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int | str | None = None
    lang: str | None = None


class AlpacaItem(_Item):
    instruction: str
    input: str | None = ""
    output: str


class ChatItem(_Item):
    messages: list[dict[str, Any]]


class PreferenceItem(_Item):
    prompt: str | list[dict[str, Any]]
    chosen: str
    rejected: str
    reason: str | None = None


@dataclass(frozen=True)
class InstructionItem:
    index: int  # position in the file
    line: int  # 1-based line where the item starts
    id: str
    lang: str  # Flores code
    messages: tuple[tuple[str, str], ...]  # (role, content); the last one is the assistant's answer
    instruction: str  # the user's request (for Alpaca: instruction plus input)
    output: str
    prompt_text: str  # the part of the request written in `lang` (Alpaca `input` is often code or data)


@dataclass(frozen=True)
class PreferenceRecord:
    index: int
    line: int
    id: str
    lang: str
    prompt: tuple[tuple[str, str], ...]
    chosen: str
    rejected: str
    reason: str


def _where(path: str | Path, line: int) -> str:
    return f"{display_path(path)}:{line}"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<item>"
        parts.append(f"{loc}: {'field required' if err['type'] == 'missing' else err['msg']}")
    return "; ".join(parts)


def _json_array(path: str | Path) -> Iterator[tuple[int, int, int, Any]]:
    """(index, line, byte offset, item) of a top-level JSON array, validating every item and separator."""
    with open(path, "rb") as fh:
        head = fh.read(len(UTF8_BOM))
        fh.seek(0)
        text = "".join(check_line(path, i, raw) for i, raw in enumerate(fh, start=1))
    dec = json.JSONDecoder()
    pos, line, n = 0, 1, len(text)
    # Byte offsets let units seek straight to their slice; they grow with the text already walked.
    byte, walked = (len(UTF8_BOM) if head == UTF8_BOM else 0), 0

    def skip(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    def advance(p_from: int, p_to: int) -> None:
        nonlocal line
        line += text.count("\n", p_from, p_to)

    pos = skip(pos)
    advance(0, pos)
    if pos >= n or text[pos] != "[":
        raise InputError(f"{_where(path, line)}: expected a JSON array of records")
    start = pos
    pos = skip(pos + 1)
    advance(start, pos)
    index = 0
    while pos < n and text[pos] != "]":
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"{display_path(path)}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        byte += len(text[walked:pos].encode("utf-8"))
        walked = pos
        yield index, line, byte, obj
        index += 1
        nxt = skip(end)
        if nxt < n and text[nxt] == ",":
            nxt = skip(nxt + 1)
        elif nxt < n and text[nxt] != "]":
            advance(pos, nxt)
            raise InputError(f"{_where(path, line)}: expected ',' or ']' after item {index - 1}")
        advance(pos, nxt)
        pos = nxt
    if pos >= n:
        raise InputError(f"{_where(path, line)}: JSON array is not closed")


@lru_cache(maxsize=32)
def _json_array_index(path: str, size: int, mtime_ns: int) -> tuple[array, array]:
    """Byte offset and line of every item, from one validating pass per file and process (the file's size
    and mtime are in the key, so a rewritten file is read again). Without it every unit would decode the
    array from its first item: quadratic in the file's length."""
    offsets, lines = array("q"), array("q")
    for _, line, byte, _ in _json_array(path):
        offsets.append(byte)
        lines.append(line)
    return offsets, lines


def json_array_index(path: str | Path) -> tuple[array, array]:
    st = os.stat(path)
    return _json_array_index(str(path), st.st_size, st.st_mtime_ns)


def _json_array_slice(path: str | Path, start: int, stop: int) -> Iterator[tuple[int, int, Any]]:
    """Items [start, stop) read from their byte offsets: the index pass already validated the file."""
    offsets, lines = json_array_index(path)
    stop = min(stop, len(offsets))
    if start >= stop:
        return
    base = offsets[start]
    with open(path, "rb") as fh:
        fh.seek(base)
        data = fh.read(offsets[stop] - base if stop < len(offsets) else -1)
    dec = json.JSONDecoder()
    for i in range(start, stop):
        end = offsets[i + 1] - base if i + 1 < stop else len(data)
        obj, _ = dec.raw_decode(data[offsets[i] - base:end].decode("utf-8"))
        yield i, lines[i], obj


def _jsonl(path: str | Path, start: int, stop: int) -> Iterator[tuple[int, int, Any]]:
    for line, text in read_lines(path, start, stop):
        if not text.strip():
            continue
        try:
            yield line - 1, line, json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{_where(path, line)}: invalid JSON: {exc.msg} (column {exc.colno})") from None


def is_json_array(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096).removeprefix(UTF8_BOM).lstrip(b" \t\r\n")
    return head.startswith(b"[")


def count_positions(path: str | Path) -> int:
    """Items of a JSON array, else lines."""
    if is_json_array(path):
        return len(json_array_index(path)[0])
    return scan_file(path)[1]


def _raw_items(path: str | Path, start: int, stop: int) -> Iterator[tuple[int, int, Any]]:
    if is_json_array(path):
        yield from _json_array_slice(path, start, stop)
    else:
        yield from _jsonl(path, start, stop)


def _language(path: str | Path, line: int, declared: str | None, own: str | None) -> str:
    code = own or declared
    if code is None:
        raise InputError(f"{_where(path, line)}: no language: declare `lang` on the source or on the record")
    try:
        return languages.get(code).flores
    except languages.UnknownLanguageError as exc:
        raise InputError(f"{_where(path, line)}: lang: {exc}") from None


def _as_dict(path: str | Path, line: int, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{_where(path, line)}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_instructions(
    path: str | Path, fmt: str, declared_lang: str | None, start: int, stop: int
) -> list[InstructionItem]:
    """Alpaca (`instruction`, `input`, `output`) or chat (`messages`) records in positions [start, stop)."""
    out = []
    for index, line, obj in _raw_items(path, start, stop):
        obj = _as_dict(path, line, obj)
        try:
            item = AlpacaItem.model_validate(obj) if fmt == "alpaca" else ChatItem.model_validate(obj)
        except ValidationError as exc:
            raise InputError(f"{_where(path, line)}: {_validation_message(exc)}") from None
        lang = _language(path, line, declared_lang, item.lang)
        ident = str(item.id if item.id is not None else index)
        if isinstance(item, AlpacaItem):
            request = item.instruction + (f"\n\n{item.input}" if item.input and item.input.strip() else "")
            msgs = (("user", request), ("assistant", item.output))
            out.append(InstructionItem(index, line, ident, lang, msgs, request, item.output, item.instruction))
            continue
        try:
            checked = prompts.validate_messages(item.messages)
        except ValueError as exc:
            raise InputError(f"{_where(path, line)}: {exc}") from None
        if checked[-1]["role"] != "assistant":
            raise InputError(f"{_where(path, line)}: messages: the last message must be the assistant's answer")
        msgs = tuple((m["role"], m["content"]) for m in checked)
        users = "\n".join(c for r, c in msgs if r == "user")
        answers = "\n".join(c for r, c in msgs if r == "assistant")
        first_user = next((c for r, c in msgs if r == "user"), "")
        out.append(InstructionItem(index, line, ident, lang, msgs, users, answers, first_user))
    return out


@lru_cache(maxsize=16)
def instructions_by_id(path: str, fmt: str, declared_lang: str | None, limit: int) -> dict[str, InstructionItem]:
    """A whole instruction file keyed by id, for aligning translated sets (cached per worker process)."""
    items = read_instructions(path, fmt, declared_lang, 0, limit)
    by_id: dict[str, InstructionItem] = {}
    for it in items:
        if it.id in by_id:
            raise InputError(f"{_where(path, it.line)}: id {it.id!r} repeats line {by_id[it.id].line}")
        by_id[it.id] = it
    return by_id


def read_preferences(path: str | Path, declared_lang: str | None, start: int, stop: int) -> list[PreferenceRecord]:
    out = []
    for index, line, obj in _raw_items(path, start, stop):
        obj = _as_dict(path, line, obj)
        try:
            item = PreferenceItem.model_validate(obj)
        except ValidationError as exc:
            raise InputError(f"{_where(path, line)}: {_validation_message(exc)}") from None
        lang = _language(path, line, declared_lang, item.lang)
        if isinstance(item.prompt, str):
            prompt = (("user", item.prompt),)
        else:
            try:
                prompt = tuple((m["role"], m["content"]) for m in prompts.validate_messages(item.prompt))
            except ValueError as exc:
                raise InputError(f"{_where(path, line)}: prompt: {exc}") from None
            if prompt[-1][0] != "user":
                raise InputError(f"{_where(path, line)}: prompt: the last message must be the user's")
        ident = str(item.id if item.id is not None else index)
        out.append(PreferenceRecord(index, line, ident, lang, prompt, item.chosen, item.rejected,
                                    item.reason or "given"))
    return out


def read_tsv(path: str | Path, start: int, stop: int) -> list[tuple[int, str, str]]:
    out = []
    for line, text in read_lines(path, start, stop):
        cols = text.split("\t")
        if len(cols) != 2:
            raise InputError(f"{_where(path, line)}: expected 2 tab-separated fields (source, target), got {len(cols)}")
        out.append((line, cols[0], cols[1]))
    return out
