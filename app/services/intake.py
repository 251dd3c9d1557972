"""What a submission's inputs become: one entry per image, with what that image brings of its own.

`inputs` is a list whose entries are a storage key, or an object `{"key", "prompt"?,
"negative_prompt"?, "seed"?, "params"?, "prompts"?}` (a prompt per photo). `inputs_prefix` names a
folder instead: every image under it, listed from storage page by page. `prompts_file` is the key
of a CSV or JSONL file mapping a file name (or key) to a prompt and optional parameters; it fills
in what the entries do not say themselves.

Everything here checks shapes and names the field (`inputs[3].prompt`); what the values mean is
the provider's to check (app/services/jobs.py validates each entry against its schema).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from app import storage as storage_mod
from app.db import db
from app.errors import InvalidInput
from app.models import Asset
from app.storage_factory import get_storage

# Per-item fields besides the key; `negative_prompt` and `seed` are parameters said the short way.
ENTRY_FIELDS = ("key", "prompt", "negative_prompt", "seed", "params", "prompts")
PARAM_SHORTHANDS = ("negative_prompt", "seed")
# What a folder's images are recognised by when listed (their content is checked on the worker).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# A prompts file is read whole: keep it to what a person or a tool writes for one job.
MAX_PROMPTS_FILE_BYTES = 64 * 1024 * 1024
# Columns of a prompts file that name the image; the rest are the prompt, concepts and parameters.
NAME_COLUMNS = ("key", "file", "name", "filename")
LIST_PAGE = 1000
# Where stored prompts files live: prompt-files/{user}/{random}.csv|jsonl.
PROMPT_FILES_PREFIX = "prompt-files/"


@dataclass(frozen=True)
class Entry:
    """One image of a submission and what it brings of its own (None: the job's)."""

    key: str
    prompt: str | None = None
    prompts: list[str] | None = None
    # Raw per-item parameters (shorthands folded in), checked against the provider's schema later.
    params: dict[str, Any] | None = None
    # Where a shorthand came from, so an error names the field the user wrote.
    shorthands: tuple[str, ...] = ()

    @property
    def own(self) -> bool:
        return self.prompt is not None or self.prompts is not None or bool(self.params)


def parse_inputs(inputs: Any, limit: int) -> list[Entry]:
    """The `inputs` list as entries; keys are checked for form, not for existence."""
    if inputs is None:
        raise InvalidInput(
            "inputs", "inputs is required: a list of uploaded image keys (or give inputs_prefix)"
        )
    if not isinstance(inputs, list):
        raise InvalidInput("inputs", "inputs must be a list of storage keys or {key, prompt, ...} objects")
    if not inputs:
        raise InvalidInput("inputs", "inputs is empty: give at least one image key")
    if len(inputs) > limit:
        raise InvalidInput("inputs", f"at most {limit} inputs per job, got {len(inputs)}")
    return [_entry(value, f"inputs[{i}]") for i, value in enumerate(inputs)]


def _entry(value: Any, where: str) -> Entry:
    if isinstance(value, str):
        return Entry(key=_key(value, where))
    if not isinstance(value, dict):
        raise InvalidInput(where, f"{where} must be a storage key or an object with a key")
    unknown = sorted(set(value) - set(ENTRY_FIELDS))
    if unknown:
        raise InvalidInput(
            f"{where}.{unknown[0]}", f"unknown field {unknown[0]!r}; known: {list(ENTRY_FIELDS)}"
        )
    if not isinstance(value.get("key"), str):
        raise InvalidInput(f"{where}.key", f"{where}.key is required: the image's storage key")
    return _with_own(Entry(key=_key(value["key"], f"{where}.key")), value, where)


def _with_own(entry: Entry, value: dict[str, Any], where: str) -> Entry:
    """`entry` with the prompt, concepts and parameters `value` gives (checked for shape)."""
    prompt = value.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidInput(f"{where}.prompt", f"{where}.prompt must be a string")
    prompts = value.get("prompts")
    if prompts is not None and (
        not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts)
    ):
        raise InvalidInput(f"{where}.prompts", f"{where}.prompts must be a list of strings")
    params = value.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(f"{where}.params", f"{where}.params must be an object")
    params = dict(params or {})
    shorthands = []
    for name in PARAM_SHORTHANDS:
        if value.get(name) is not None:
            params[name] = value[name]
            shorthands.append(name)
    return replace(
        entry,
        prompt=prompt if prompt is not None else entry.prompt,
        prompts=prompts if prompts is not None else entry.prompts,
        params={**(entry.params or {}), **params} or None,
        shorthands=tuple(sorted({*entry.shorthands, *shorthands})),
    )


def _key(key: str, where: str) -> str:
    try:
        return storage_mod.validate_key(key)
    except ValueError as exc:
        raise InvalidInput(where, f"invalid key {key!r}: {exc}") from None


def field_of(entry: Entry, index: int, field: str) -> str:
    """The field a provider's error names, as the user wrote it for input `index`."""
    name = field.removeprefix("params.")
    if field.startswith("params.") and name in entry.shorthands:
        return f"inputs[{index}].{name}"
    return f"inputs[{index}].{field}"


def uploaded_names(keys: list[str]) -> dict[str, str]:
    """The uploaded file name per key, for keys that were uploaded with one (what a prompts file
    names an image by)."""
    names: dict[str, str] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 1000):
        rows = db.session.execute(
            select(Asset.key, Asset.filename).where(Asset.key.in_(unique[start : start + 1000]))
        )
        names.update((k, f) for k, f in rows if f)
    return names


# --- folders ------------------------------------------------------------------------------------


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix.strip("/"):
        raise InvalidInput("inputs_prefix", "inputs_prefix must be a folder, e.g. 'photos/2026-12/'")
    try:
        return storage_mod.validate_prefix(prefix, allow_empty=False)
    except ValueError as exc:
        raise InvalidInput("inputs_prefix", f"invalid inputs_prefix {prefix!r}: {exc}") from None


def keys_under(prefix: str) -> Iterator[list[str]]:
    """The image keys under `prefix`, a storage page at a time, in key order."""
    store = get_storage()
    cursor = None
    while True:
        page, cursor = store.list(prefix, cursor=cursor, limit=LIST_PAGE)
        keys = [o.key for o in page if o.key.lower().endswith(IMAGE_SUFFIXES)]
        if keys:
            yield keys
        if not cursor:
            return


# --- prompts files --------------------------------------------------------------------------------


@dataclass
class PromptsFile:
    """Name or key -> what that image brings (its prompt, concepts, parameters)."""

    rows: dict[str, dict[str, Any]]
    used: set[str]

    def lookup(self, key: str, filename: str | None) -> tuple[str, dict[str, Any]] | None:
        """The row for an image: by its key, then its uploaded name, then the key's last part."""
        for name in (key, filename, key.rsplit("/", 1)[-1]):
            if name and name in self.rows:
                return name, self.rows[name]
        return None

    def apply(self, entry: Entry, filename: str | None) -> Entry:
        """`entry` with its row filled in under what the entry says itself."""
        found = self.lookup(entry.key, filename)
        if found is None:
            return entry
        name, row = found
        self.used.add(name)
        merged = _with_own(Entry(key=entry.key), row, f"prompts_file[{name}]")
        return replace(
            entry,
            prompt=entry.prompt if entry.prompt is not None else merged.prompt,
            prompts=entry.prompts if entry.prompts is not None else merged.prompts,
            params={**(merged.params or {}), **(entry.params or {})} or None,
            shorthands=tuple(sorted({*entry.shorthands, *merged.shorthands})),
        )

    def unmatched(self) -> list[str]:
        return sorted(set(self.rows) - self.used)


def store_prompts_file(data: bytes, name: str, user_id: int | None) -> str:
    """Keep a (parsed, checked) prompts file for `prompts_file`; returns its key."""
    jsonl = name.lower().endswith((".jsonl", ".ndjson")) or data.lstrip().startswith(b"{")
    key = f"{PROMPT_FILES_PREFIX}{user_id or 0}/{secrets.token_hex(8)}.{'jsonl' if jsonl else 'csv'}"
    get_storage().put_bytes(key, data, "application/x-ndjson" if jsonl else "text/csv")
    return key


def read_prompts_file(key: Any) -> PromptsFile:
    """Read and parse the prompts file stored at `key` (CSV with a header, or JSONL)."""
    if not isinstance(key, str):
        raise InvalidInput("prompts_file", "prompts_file must be the storage key of a CSV or JSONL file")
    key = _key(key, "prompts_file")
    store = get_storage()
    info = store.head(key)
    if info is None:
        raise InvalidInput("prompts_file", f"prompts_file {key!r} does not exist in storage")
    if info.size > MAX_PROMPTS_FILE_BYTES:
        raise InvalidInput("prompts_file", f"prompts_file is over {MAX_PROMPTS_FILE_BYTES // 2**20} MiB")
    return PromptsFile(parse_prompts(store.get_bytes(key), key), set())


def parse_prompts(data: bytes, name: str = "") -> dict[str, dict[str, Any]]:
    """CSV (a header naming `file`/`name`/`key` and `prompt`, any further column a parameter) or
    JSONL (one object per line, the same fields) -> name -> row. Errors name the line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("prompts_file", "prompts_file is not UTF-8 text") from None
    stripped = text.lstrip()
    jsonl = name.lower().endswith((".jsonl", ".ndjson")) or stripped.startswith("{")
    rows = _jsonl_rows(text) if jsonl else _csv_rows(text)
    found: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        where = f"prompts_file line {line}"
        names = [row.pop(c) for c in NAME_COLUMNS if c in row]
        image = next((n for n in names if isinstance(n, str) and n.strip()), None)
        if image is None:
            raise InvalidInput("prompts_file", f"{where}: no file name (a column {list(NAME_COLUMNS)})")
        image = image.strip()
        if image in found:
            raise InvalidInput("prompts_file", f"{where}: {image!r} appears twice")
        unknown_ok = {k: v for k, v in row.items() if k not in ("prompt", "prompts", *PARAM_SHORTHANDS)}
        params = unknown_ok.pop("params", None) if jsonl else None
        if params is not None and not isinstance(params, dict):
            raise InvalidInput("prompts_file", f"{where}: params must be an object")
        found[image] = {
            **{k: row[k] for k in ("prompt", "prompts", *PARAM_SHORTHANDS) if row.get(k) not in (None, "")},
            "params": {**unknown_ok, **(params or {})},
        }
    if not found:
        raise InvalidInput("prompts_file", "prompts_file has no rows")
    return found


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidInput("prompts_file", f"prompts_file line {n} is not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise InvalidInput("prompts_file", f"prompts_file line {n} must be a JSON object")
        yield n, row


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if not set(header) & set(NAME_COLUMNS):
        raise InvalidInput(
            "prompts_file", f"prompts_file's header names no file column: one of {list(NAME_COLUMNS)}"
        )
    reader.fieldnames = header
    for row in reader:
        n = reader.line_num
        out: dict[str, Any] = {}
        for column, value in row.items():
            if column is None or value is None or value == "":
                continue  # extra cells without a header, and empty cells: nothing said
            if column in ("prompt", "negative_prompt", *NAME_COLUMNS):
                out[column] = value
            elif column == "prompts":
                out[column] = [c.strip() for c in value.split(";") if c.strip()]
            else:
                out[column] = _cell(value)
        yield n, out


def _cell(value: str) -> Any:
    """A parameter cell: a number or boolean when it reads as one (JSON), else the text."""
    try:
        return json.loads(value)
    except ValueError:
        return value
