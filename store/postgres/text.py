"""PostgreSQL's text cannot hold a NUL character, which SQLite's can: a prompt pasted with one would
make the insert fail (and its JSON's `->>` fail in the prompts' search column). Every text and JSON
value the twins write passes through `clean`, which puts U+FFFD (the replacement character) for each NUL,
so the row is kept and reads back the same on both engines but for that one character.
"""

from typing import Any

NUL = "\x00"
REPLACEMENT = "\ufffd"


def clean(value: Any) -> Any:
    """`value` with every NUL in its strings (dict keys, list items, nested) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT) if NUL in value else value
    if isinstance(value, dict):
        return {clean(key): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean(item) for item in value)
    return value
