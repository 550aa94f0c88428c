"""MkDocs hook (mkdocs.yml `hooks:`): the settings reference, rendered from config.Settings at build time so it cannot drift.

A page that holds the marker `<!-- settings -->` gets, in its place, every field of `Settings`: its
environment variable, type, default and the comments beside it in config.py. Comment blocks that
follow a blank line in the class are section headings; others describe the field below them.
"""

from __future__ import annotations

import ast
import io
import json
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # tests/ -> the repository
MARKER = "<!-- settings -->"


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    return markdown.replace(MARKER, settings_reference()) if MARKER in markdown else markdown


def settings_reference() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from config import Settings

    source = (ROOT / "config.py").read_text(encoding="utf-8")
    fields, comments = _field_lines(source), _comments(source)
    lines: list[str] = []
    for name, info in Settings.model_fields.items():
        start, end, annotation = fields[name]
        heading = _section(start, comments, source)
        if heading:
            lines += [f"## {heading[0]}", ""] + ([heading[1], ""] if heading[1] else [])
        lines += [f"### `{name.upper()}`", "", f"- type: `{_type(annotation)}`", f"- default: {_default(info)}"]
        lines += [f"- allowed: {limits}"] if (limits := _limits(info)) else []
        about = " ".join(_above(start, comments, source) + [comments[n] for n in range(start, end + 1) if n in comments])
        lines += ([f"- {about}"] if about else []) + [""]
    return "\n".join(lines)


def _field_lines(source: str) -> dict[str, tuple[int, int, str]]:
    """Each field of class Settings: its first and last line and the text of its annotation."""
    tree = ast.parse(source)
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    return {node.target.id: (node.lineno, node.end_lineno, ast.get_source_segment(source, node.annotation))
            for node in cls.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on it."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}


def _block_above(line: int, source: str) -> tuple[list[int], bool]:
    """The comment-only lines right above `line`, and whether a blank line comes before them."""
    text = source.splitlines()
    numbers, n = [], line - 1
    while n >= 1 and text[n - 1].strip().startswith("#"):
        numbers.insert(0, n)
        n -= 1
    return numbers, n >= 1 and not text[n - 1].strip()


def _section(line: int, comments: dict[int, str], source: str) -> tuple[str, str] | None:
    """A comment block after a blank line starts a section: its title, then what follows a colon."""
    numbers, after_blank = _block_above(line, source)
    if not numbers or not after_blank:
        return None
    title, _, rest = " ".join(comments[n] for n in numbers).partition(":")
    rest = rest.strip()
    return title.strip(), rest[:1].upper() + rest[1:]


def _above(line: int, comments: dict[int, str], source: str) -> list[str]:
    """A comment block right above a field (not after a blank line) describes it."""
    numbers, after_blank = _block_above(line, source)
    return [] if after_blank else [comments[n] for n in numbers]


def _limits(info) -> str:
    """The bounds a field's value must keep (from its Field(ge=..., le=..., ...))."""
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than",
             "max_length": "length at most", "pattern": "matches"}
    parts = []
    for item in info.metadata:
        for key, word in words.items():
            value = getattr(item, key, None)
            if value is not None:
                parts.append(f"{word} `{value}`")
    return ", ".join(parts)


def _type(annotation: str) -> str:
    return " ".join(annotation.replace("SecretStr", "secret").replace(" | None", ", optional").split())


def _default(info) -> str:
    from pydantic_core import to_jsonable_python

    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Path) and value.is_absolute():
        return f"`{value.relative_to(ROOT)}` beside `bot.py`" if value.is_relative_to(ROOT) else f"`{value}`"
    text = json.dumps(to_jsonable_python(value), ensure_ascii=False)
    if isinstance(value, str | Path):
        text = str(value) if str(value) else '""'
    return f"`{text}`" if len(text) <= 100 else f"\n\n    ```json\n    {text}\n    ```"
