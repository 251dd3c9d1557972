"""What `bulkgen submit` sends: the image files, and what each one gets of its own (a prompts file)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

# What the server accepts (app/images.py: PNG, JPEG, WEBP; the type is checked from the bytes there).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# Columns (CSV) or fields (JSONL) naming the image a row is for, as the server's own prompts files
# (app/services/intake.py) name them: the first one filled in counts.
NAME_FIELDS = ("file", "name", "key", "filename")
# Fields of an input object (POST /api/v1/jobs `inputs`) besides `key` and `params`.
ITEM_FIELDS = ("prompt", "negative_prompt", "seed", "prompts")


class UsageError(Exception):
    """A mistake in the command line or in a file it names (exit status 2)."""


@dataclass
class InputFile:
    path: Path
    # How a prompts file may name it: its path below the folder given (posix), or its file name.
    rel: str


@dataclass
class Row:
    """One line of a prompts file: what one image gets of its own."""

    name: str
    line: int
    fields: dict[str, Any] = field(default_factory=dict)  # prompt, negative_prompt, seed, prompts
    params: dict[str, Any] = field(default_factory=dict)

    def entry(self, key: str) -> dict[str, Any]:
        """The input object for POST /api/v1/jobs."""
        out: dict[str, Any] = {"key": key, **self.fields}
        if self.params:
            out["params"] = dict(self.params)
        return out


def parse_value(text: str) -> Any:
    """`3` -> 3, `0.5` -> 0.5, `true` -> True, `[1, 2]` -> [1, 2]; anything that is not JSON stays a string."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        value = json.loads(text, parse_constant=refuse)  # NaN / Infinity: a string, not a float
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def parse_param(text: str) -> tuple[str, Any]:
    """`--param k=v`."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"--param {text!r}: write NAME=VALUE")
    return name, parse_value(value)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def collect_images(args: list[str]) -> list[InputFile]:
    """Files as given, and the images in folders (recursively, by extension, sorted; hidden files and
    folders skipped: `.DS_Store`, macOS `._cat.jpg`). A file named twice is sent once."""
    found: list[InputFile] = []
    seen: set[Path] = set()

    def add(path: Path, rel: str) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.append(InputFile(path, rel))

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    file = Path(root) / name
                    if _is_image(file):
                        add(file, file.relative_to(path).as_posix())
        elif path.is_file():
            add(path, path.name)
        else:
            raise UsageError(f"{arg}: no such file or folder")
    if not found:
        raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {' '.join(args)}")
    return found


def _norm(name: str) -> str:
    name = name.strip().replace("\\", "/")
    return PurePosixPath(name).as_posix() if name else ""


def _put(rows: dict[str, Row], row: Row, source: str) -> None:
    if not row.name:
        raise UsageError(f"{source} line {row.line}: no file name (give {' or '.join(NAME_FIELDS)})")
    if row.name in rows:
        raise UsageError(
            f"{source} line {row.line}: {row.name} already has a row (line {rows[row.name].line})"
        )
    rows[row.name] = row


def read_csv(text: str, source: str = "prompts file") -> dict[str, Row]:
    """Columns: `file` (or `name`, `key`, `filename`), `prompt`; `negative_prompt`, `seed` and `prompts`
    (concepts, separated by `;`) when present; every other column is a parameter, its value JSON
    when it parses. Empty cells are left out (the job's value applies)."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    if not set(NAME_FIELDS) & set(header):
        raise UsageError(
            f"{source}: the first line must name the columns, one of them {'/'.join(NAME_FIELDS)}"
        )
    if len(set(header)) != len(header):
        raise UsageError(f"{source}: a column appears twice in the first line")
    reader.fieldnames = header
    rows: dict[str, Row] = {}
    for record in reader:
        line = reader.line_num
        if None in record:
            raise UsageError(f"{source} line {line}: more cells than columns")
        cells = {k: (v or "").strip() for k, v in record.items() if k and k not in NAME_FIELDS}
        name = next((record[f] for f in NAME_FIELDS if (record.get(f) or "").strip()), "")
        row = Row(_norm(name), line)
        if not row.name and not any(cells.values()):
            continue  # a blank line
        for column, value in cells.items():
            if value == "":
                continue
            if column in ("prompt", "negative_prompt"):
                row.fields[column] = value
            elif column == "prompts":
                row.fields[column] = [c.strip() for c in value.split(";") if c.strip()]
            elif column == "seed":
                row.fields[column] = parse_value(value)
            else:
                row.params[column] = parse_value(value)
        _put(rows, row, source)
    return rows


def read_jsonl(text: str, source: str = "prompts file") -> dict[str, Row]:
    """One object per line: `{"file": "cat.jpg", "prompt": "...", "params": {...}}` (also
    `negative_prompt`, `seed`, `prompts`: a list of concepts). Any other field is a parameter, as
    in a CSV file (the server refuses one its provider does not know)."""
    rows: dict[str, Row] = {}
    for line, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{source} line {line}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise UsageError(f'{source} line {line}: expected an object like {{"file": ..., "prompt": ...}}')
        name = next((obj[f] for f in NAME_FIELDS if obj.get(f)), "")
        if not isinstance(name, str):
            raise UsageError(f"{source} line {line}: the file name must be a string")
        row = Row(_norm(name), line)
        for key in ITEM_FIELDS:
            if obj.get(key) is None:
                continue
            value = obj[key]
            if key in ("prompt", "negative_prompt") and not isinstance(value, str):
                raise UsageError(f"{source} line {line}: {key} must be a string")
            if key == "prompts":
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise UsageError(f"{source} line {line}: prompts must be a list of strings")
            row.fields[key] = value
        params = obj.get("params") or {}
        if not isinstance(params, dict):
            raise UsageError(f"{source} line {line}: params must be an object")
        extra = {k: v for k, v in obj.items() if k not in (*NAME_FIELDS, *ITEM_FIELDS, "params")}
        row.params = {**extra, **params}
        _put(rows, row, source)
    return rows


def read_prompts(path: str | Path) -> dict[str, Row]:
    """A prompts file, CSV or JSON Lines (by extension; else a first `{` means JSON Lines)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and text.lstrip().startswith("{")):
        return read_jsonl(text, str(path))
    return read_csv(text, str(path))


def match_rows(files: list[InputFile], rows: dict[str, Row]) -> list[Row | None]:
    """Each file's row: the one naming its path below the folder given, else its file name, else
    its name without the extension. A row that names none of the files is an error (a typo there
    would silently give an image the default prompt)."""
    used: set[str] = set()
    out: list[Row | None] = []
    for f in files:
        rel = PurePosixPath(f.rel)
        for name in (rel.as_posix(), rel.name, rel.with_suffix("").as_posix(), rel.stem):
            if name in rows:
                used.add(name)
                out.append(rows[name])
                break
        else:
            out.append(None)
    unused = [r for name, r in rows.items() if name not in used]
    if unused:
        listed = ", ".join(f"{r.name} (line {r.line})" for r in unused[:5])
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        raise UsageError(f"the prompts file names images that are not among the inputs: {listed}{more}")
    return out
