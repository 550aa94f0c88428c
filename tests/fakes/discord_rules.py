"""Validation rules the fake Discord (tests/fakes/discord.py) enforces on what a bot sends.

Pure functions, no I/O. Each ``validate_*`` adds problems to a :class:`FormErrors`, which renders
them the way Discord does in a ``50035 Invalid Form Body`` reply::

    {"message": "Invalid Form Body", "code": 50035,
     "errors": {"components": {"0": {"components": {"1": {"custom_id": {"_errors": [
         {"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 100 in length."}]}}}}}}}

discord.py flattens that into ``HTTPException.text`` as ``In components.0.components.1.custom_id: ...``.
The limits are Discord's documented ones; the error codes and messages mimic Discord's wording.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

# -- limits ----------------------------------------------------------------------------------------
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_ATTACHMENTS = 10
MAX_ACTION_ROWS = 5
MAX_BUTTONS_PER_ROW = 5
MAX_CUSTOM_ID = 100
MAX_BUTTON_LABEL = 80
MAX_V2_COMPONENTS = 40
MAX_V2_TEXT = 4000
MAX_SELECT_OPTIONS = 25
MAX_SELECT_PLACEHOLDER = 150
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
EMBED_TOTAL = 6000
MAX_CHOICES = 25
MAX_MODAL_TITLE = 45
MAX_NONCE = 25

FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_VOICE_MESSAGE = 1 << 13
FLAG_COMPONENTS_V2 = 1 << 15

SELECT_TYPES = {3, 5, 6, 7, 8}
ROW_CHILD_TYPES = {2} | SELECT_TYPES
V1_TOP_LEVEL = {1}
V2_TOP_LEVEL = {1, 9, 10, 12, 13, 14, 17}
MODAL_TOP_LEVEL = {1, 10, 18}  # action row (legacy), text display, label
COMPONENT_NAMES = {
    1: "action row", 2: "button", 3: "string select", 4: "text input", 5: "user select", 6: "role select",
    7: "mentionable select", 8: "channel select", 9: "section", 10: "text display", 11: "thumbnail",
    12: "media gallery", 13: "file", 14: "separator", 17: "container", 18: "label", 19: "file upload",
}

# Chat-input command and option names: lowercase letters/digits/-/_ (Discord also allows other scripts).
COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$", re.UNICODE)


class FormErrors:
    """Collects ``(path, code, message)`` problems and renders Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[Any, ...], str, str]] = []

    def add(self, path: tuple[Any, ...] | list[Any], code: str, message: str) -> None:
        self.items.append((tuple(path), code, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def to_errors(self) -> dict[str, Any]:
        root: dict[str, Any] = {}
        for path, code, message in self.items:
            node = root
            for part in path:
                node = node.setdefault(str(part), {})
            node.setdefault("_errors", []).append({"code": code, "message": message})
        return root

    def describe(self) -> str:
        return "; ".join(f"{'.'.join(str(p) for p in path) or '<body>'}: {message}" for path, _, message in self.items)


# -- helpers ---------------------------------------------------------------------------------------
def _length(errs: FormErrors, path: tuple[Any, ...], value: Any, lo: int, hi: int) -> None:
    if value is None:
        if lo > 0:
            errs.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        return
    if not isinstance(value, str):
        errs.add(path, "BASE_TYPE_STRING", "Must be a string.")
        return
    n = len(value)
    if lo <= 0 and n > hi:
        errs.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {hi} or fewer in length.")
    elif not lo <= n <= hi:
        errs.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {lo} and {hi} in length.")


def _max_items(errs: FormErrors, path: tuple[Any, ...], value: Any, hi: int, lo: int = 0) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errs.add(path, "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return []
    if len(value) > hi:
        errs.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {hi} or fewer in length.")
    elif len(value) < lo:
        errs.add(path, "BASE_TYPE_MIN_LENGTH", f"Must be {lo} or more in length.")
    return value


def iter_components(components: Any) -> Iterator[dict[str, Any]]:
    """Every component dict in a (possibly nested, components v2) component tree, depth first."""
    if not isinstance(components, list):
        return
    for comp in components:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from iter_components(comp.get("components"))
        for key in ("accessory", "component"):
            child = comp.get(key)
            if isinstance(child, dict):
                yield from iter_components([child])


# -- messages --------------------------------------------------------------------------------------
def validate_message(payload: dict[str, Any], errs: FormErrors, *, n_files: int = 0) -> None:
    """Checks the fields present in a create or edit payload (content, embeds, components, ...)."""
    if not isinstance(payload, dict):
        errs.add((), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return
    flags = payload.get("flags") or 0
    if not isinstance(flags, int):
        errs.add(("flags",), "NUMBER_TYPE_COERCE", f"Value \"{flags}\" is not int.")
        flags = 0
    content = payload.get("content")
    if content is not None:
        _length(errs, ("content",), content, 0, MAX_CONTENT)
    if "embeds" in payload:
        validate_embeds(payload.get("embeds"), errs)
    if "components" in payload:
        validate_components(payload.get("components"), errs, flags=flags)
    attachments = payload.get("attachments")
    if attachments is not None:
        _max_items(errs, ("attachments",), attachments, MAX_ATTACHMENTS)
    if n_files > MAX_ATTACHMENTS:
        errs.add(("files",), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ATTACHMENTS} or fewer in length.")
    if "allowed_mentions" in payload:
        validate_allowed_mentions(payload.get("allowed_mentions"), errs)
    if flags & FLAG_COMPONENTS_V2:
        if payload.get("content"):
            errs.add(("content",), "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                     "The 'content' field cannot be used when using MessageFlags.IS_COMPONENTS_V2")
        if payload.get("embeds"):
            errs.add(("embeds",), "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                     "The 'embeds' field cannot be used when using MessageFlags.IS_COMPONENTS_V2")


def validate_nonce(payload: dict[str, Any], errs: FormErrors) -> None:
    """``nonce`` / ``enforce_nonce`` of POST /channels/{id}/messages: the nonce is an integer or a string
    of at most 25 characters (null: none); ``enforce_nonce`` a boolean."""
    if not isinstance(payload, dict):
        return
    nonce = payload.get("nonce")
    if nonce is not None:
        if isinstance(nonce, bool) or not isinstance(nonce, (int, str)):
            errs.add(("nonce",), "NONCE_TYPE_INVALID_TYPE", "This field must be a string or integer.")
        elif isinstance(nonce, str) and len(nonce) > MAX_NONCE:
            errs.add(("nonce",), "NONCE_TYPE_TOO_LONG", f"Must be {MAX_NONCE} or fewer characters long.")
    enforce = payload.get("enforce_nonce")
    if enforce is not None and not isinstance(enforce, bool):
        errs.add(("enforce_nonce",), "BASE_TYPE_BOOLEAN", "Must be either true or false.")


def validate_embeds(embeds: Any, errs: FormErrors) -> None:
    embeds = _max_items(errs, ("embeds",), embeds, MAX_EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        path = ("embeds", i)
        if not isinstance(embed, dict):
            errs.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        for key, hi in (("title", EMBED_TITLE), ("description", EMBED_DESCRIPTION)):
            value = embed.get(key)
            if value is not None:
                _length(errs, path + (key,), value, 0, hi)
                total += len(str(value))
        fields = _max_items(errs, path + ("fields",), embed.get("fields"), EMBED_FIELDS)
        for j, fld in enumerate(fields):
            fpath = path + ("fields", j)
            if not isinstance(fld, dict):
                errs.add(fpath, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            _length(errs, fpath + ("name",), fld.get("name"), 1, EMBED_FIELD_NAME)
            _length(errs, fpath + ("value",), fld.get("value"), 1, EMBED_FIELD_VALUE)
            total += len(str(fld.get("name") or "")) + len(str(fld.get("value") or ""))
        footer = embed.get("footer")
        if isinstance(footer, dict) and footer.get("text") is not None:
            _length(errs, path + ("footer", "text"), footer.get("text"), 0, EMBED_FOOTER)
            total += len(str(footer.get("text")))
        author = embed.get("author")
        if isinstance(author, dict) and author.get("name") is not None:
            _length(errs, path + ("author", "name"), author.get("name"), 0, EMBED_AUTHOR)
            total += len(str(author.get("name")))
        color = embed.get("color")
        if color is not None and (not isinstance(color, int) or not 0 <= color <= 0xFFFFFF):
            errs.add(path + ("color",), "NUMBER_TYPE_MAX", "int value should be less than or equal to 16777215.")
    if total > EMBED_TOTAL:
        errs.add(("embeds",), "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {EMBED_TOTAL}")


def validate_allowed_mentions(am: Any, errs: FormErrors) -> None:
    if am is None:
        return
    if not isinstance(am, dict):
        errs.add(("allowed_mentions",), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return
    parse = am.get("parse") or []
    for kind in ("users", "roles"):
        if kind in parse and am.get(kind):
            errs.add(("allowed_mentions",), "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                     f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.')
        if len(am.get(kind) or []) > 100:
            errs.add(("allowed_mentions", kind), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")


def validate_components(components: Any, errs: FormErrors, *, flags: int = 0, modal: bool = False,
                        path: tuple[Any, ...] = ("components",)) -> None:
    """Action-row layout (v1) or the component tree (v2), custom_id rules and uniqueness."""
    if components is None:
        return
    if not isinstance(components, list):
        errs.add(path, "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return
    v2 = bool(flags & FLAG_COMPONENTS_V2)
    if not v2 and not modal and len(components) > MAX_ACTION_ROWS:
        errs.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length.")
    top_allowed = V2_TOP_LEVEL if v2 else (MODAL_TOP_LEVEL if modal else V1_TOP_LEVEL)
    state = {"custom_ids": set(), "count": 0, "text": 0}
    for i, comp in enumerate(components):
        cpath = path + (i,)
        if isinstance(comp, dict) and comp.get("type") not in top_allowed:
            allowed = ", ".join(str(t) for t in sorted(top_allowed))
            hint = " (set the IS_COMPONENTS_V2 flag to use this component)" if comp.get("type") in V2_TOP_LEVEL else ""
            errs.add(cpath + ("type",), "UNION_TYPE_CHOICES", f"Value of field \"type\" must be one of ({allowed},).{hint}")
            continue
        _component(comp, cpath, errs, state, modal=modal)
    if v2 and state["count"] > MAX_V2_COMPONENTS:
        errs.add(path, "BASE_TYPE_MAX_LENGTH",
                 f"Must be {MAX_V2_COMPONENTS} or fewer in length (total components, including nested).")
    if v2 and state["text"] > MAX_V2_TEXT:
        errs.add(path, "BASE_TYPE_MAX_LENGTH", f"Total text of text displays must be {MAX_V2_TEXT} or fewer in length.")


def _custom_id(comp: dict[str, Any], path: tuple[Any, ...], errs: FormErrors, state: dict[str, Any]) -> None:
    cid = comp.get("custom_id")
    _length(errs, path + ("custom_id",), cid, 1, MAX_CUSTOM_ID)
    if isinstance(cid, str):
        if cid in state["custom_ids"]:
            errs.add(path + ("custom_id",), "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
        state["custom_ids"].add(cid)


def _component(comp: Any, path: tuple[Any, ...], errs: FormErrors, state: dict[str, Any], *, modal: bool) -> None:
    if not isinstance(comp, dict):
        errs.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return
    state["count"] += 1
    ctype = comp.get("type")
    if ctype == 1:  # action row
        children = comp.get("components")
        if not isinstance(children, list) or not children:
            errs.add(path + ("components",), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
            return
        child_types = ({4} if modal else set()) | ROW_CHILD_TYPES
        n_selects = sum(1 for c in children if isinstance(c, dict) and c.get("type") in SELECT_TYPES | {4})
        if n_selects and len(children) > 1:
            errs.add(path + ("components",), "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                     "The specified component exceeds the maximum width")
        elif len(children) > MAX_BUTTONS_PER_ROW:
            errs.add(path + ("components",), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_BUTTONS_PER_ROW} or fewer in length.")
        for j, child in enumerate(children):
            cpath = path + ("components", j)
            if isinstance(child, dict) and child.get("type") not in child_types:
                errs.add(cpath + ("type",), "UNION_TYPE_CHOICES",
                         f"Value of field \"type\" must be one of ({', '.join(map(str, sorted(child_types)))}).")
                continue
            _component(child, cpath, errs, state, modal=modal)
    elif ctype == 2:  # button
        style = comp.get("style")
        if style not in (1, 2, 3, 4, 5, 6):
            errs.add(path + ("style",), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
        if style == 5:
            if not comp.get("url"):
                errs.add(path + ("url",), "BASE_TYPE_REQUIRED", "This field is required")
            if comp.get("custom_id") is not None:
                errs.add(path + ("custom_id",), "BUTTON_COMPONENT_CUSTOM_ID_WITH_URL",
                         "A custom id and url cannot both be specified")
        elif style == 6:
            if not comp.get("sku_id"):
                errs.add(path + ("sku_id",), "BASE_TYPE_REQUIRED", "This field is required")
        else:
            if comp.get("url") is not None:
                errs.add(path + ("url",), "BUTTON_COMPONENT_URL_WITH_CUSTOM_ID", "A custom id and url cannot both be specified")
            _custom_id(comp, path, errs, state)
        label = comp.get("label")
        if label is not None:
            _length(errs, path + ("label",), label, 0, MAX_BUTTON_LABEL)
        elif style != 6 and not comp.get("emoji"):
            errs.add(path, "BUTTON_COMPONENT_NO_LABEL_OR_EMOJI", "A label or emoji must be specified")
    elif ctype in SELECT_TYPES:
        _custom_id(comp, path, errs, state)
        if comp.get("placeholder") is not None:
            _length(errs, path + ("placeholder",), comp.get("placeholder"), 0, MAX_SELECT_PLACEHOLDER)
        lo = comp.get("min_values", 1)
        hi = comp.get("max_values", 1)
        if not isinstance(lo, int) or not 0 <= lo <= 25:
            errs.add(path + ("min_values",), "NUMBER_TYPE_MAX", "int value should be between 0 and 25.")
        if not isinstance(hi, int) or not 1 <= hi <= 25:
            errs.add(path + ("max_values",), "NUMBER_TYPE_MAX", "int value should be between 1 and 25.")
        if ctype == 3:
            options = _max_items(errs, path + ("options",), comp.get("options"), MAX_SELECT_OPTIONS, lo=1)
            if comp.get("options") is None:
                errs.add(path + ("options",), "BASE_TYPE_REQUIRED", "This field is required")
            values: set[str] = set()
            for k, opt in enumerate(options):
                opath = path + ("options", k)
                if not isinstance(opt, dict):
                    errs.add(opath, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                    continue
                _length(errs, opath + ("label",), opt.get("label"), 1, 100)
                _length(errs, opath + ("value",), opt.get("value"), 1, 100)
                if opt.get("description") is not None:
                    _length(errs, opath + ("description",), opt.get("description"), 0, 100)
                if opt.get("value") in values:
                    errs.add(opath + ("value",), "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED",
                             "Select component option values must be unique")
                values.add(opt.get("value"))
            if isinstance(hi, int) and options and hi > len(options):
                errs.add(path + ("max_values",), "SELECT_COMPONENT_MAX_VALUES_EXCEEDS_OPTIONS",
                         "max_values must be less than or equal to the number of options")
    elif ctype == 4:  # text input (modals)
        if not modal:
            errs.add(path + ("type",), "COMPONENT_TYPE_INVALID", "Text inputs are only allowed in modals")
        _custom_id(comp, path, errs, state)
        if comp.get("label") is not None:
            _length(errs, path + ("label",), comp.get("label"), 1, 45)
    elif ctype == 9:  # section
        texts = comp.get("components")
        _max_items(errs, path + ("components",), texts, 3, lo=1)
        for j, child in enumerate(texts or []):
            _component(child, path + ("components", j), errs, state, modal=modal)
        accessory = comp.get("accessory")
        if accessory is None:
            errs.add(path + ("accessory",), "BASE_TYPE_REQUIRED", "This field is required")
        else:
            _component(accessory, path + ("accessory",), errs, state, modal=modal)
    elif ctype == 10:  # text display
        content = comp.get("content")
        _length(errs, path + ("content",), content, 1, MAX_V2_TEXT)
        state["text"] += len(content) if isinstance(content, str) else 0
    elif ctype == 17:  # container
        children = comp.get("components")
        _max_items(errs, path + ("components",), children, MAX_V2_COMPONENTS, lo=1)
        for j, child in enumerate(children or []):
            _component(child, path + ("components", j), errs, state, modal=modal)
    elif ctype == 12:  # media gallery
        _max_items(errs, path + ("items",), comp.get("items"), 10, lo=1)
    elif ctype == 18:  # label (modals)
        child = comp.get("component")
        if child is None:
            errs.add(path + ("component",), "BASE_TYPE_REQUIRED", "This field is required")
        else:
            _component(child, path + ("component",), errs, state, modal=modal)
    elif ctype in (11, 13, 14, 19):
        if ctype == 19:
            _custom_id(comp, path, errs, state)
    else:
        errs.add(path + ("type",), "UNION_TYPE_CHOICES", f"Unknown component type {ctype!r}.")


# -- interaction callbacks ---------------------------------------------------------------------------
# interaction type -> callback types Discord accepts for it
ALLOWED_CALLBACKS = {
    1: {1},  # PING -> PONG
    2: {4, 5, 9, 10, 12},  # application command
    3: {4, 5, 6, 7, 9, 10, 12},  # component
    4: {8},  # autocomplete
    5: {4, 5, 6, 7, 10, 12},  # modal submit
}


def validate_choices(data: Any, errs: FormErrors) -> None:
    if not isinstance(data, dict):
        errs.add(("data",), "BASE_TYPE_REQUIRED", "This field is required")
        return
    choices = _max_items(errs, ("data", "choices"), data.get("choices"), MAX_CHOICES)
    for i, ch in enumerate(choices):
        path = ("data", "choices", i)
        if not isinstance(ch, dict):
            errs.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        _length(errs, path + ("name",), ch.get("name"), 1, 100)
        if "value" not in ch:
            errs.add(path + ("value",), "BASE_TYPE_REQUIRED", "This field is required")
        elif isinstance(ch["value"], str) and len(ch["value"]) > 100:
            errs.add(path + ("value",), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")


def validate_modal(data: Any, errs: FormErrors) -> None:
    if not isinstance(data, dict):
        errs.add(("data",), "BASE_TYPE_REQUIRED", "This field is required")
        return
    _length(errs, ("data", "custom_id"), data.get("custom_id"), 1, MAX_CUSTOM_ID)
    _length(errs, ("data", "title"), data.get("title"), 1, MAX_MODAL_TITLE)
    comps = data.get("components")
    _max_items(errs, ("data", "components"), comps, 5, lo=1)
    if comps is None:
        errs.add(("data", "components"), "BASE_TYPE_REQUIRED", "This field is required")
    validate_components(comps, errs, modal=True, path=("data", "components"))


# -- application commands ----------------------------------------------------------------------------
def validate_commands(commands: Any, errs: FormErrors) -> None:
    """Bulk-overwrite payload: names, descriptions, option counts/order, duplicates."""
    if not isinstance(commands, list):
        errs.add((), "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return
    seen: set[tuple[int, str]] = set()
    n_chat = 0
    for i, cmd in enumerate(commands):
        path = (i,)
        if not isinstance(cmd, dict):
            errs.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        ctype = cmd.get("type", 1)
        name = cmd.get("name")
        if ctype == 1:
            n_chat += 1
            _command_name(name, path + ("name",), errs)
            _length(errs, path + ("description",), cmd.get("description"), 1, 100)
            _options(cmd.get("options"), path + ("options",), errs, depth=0)
        else:
            _length(errs, path + ("name",), name, 1, 32)
        key = (ctype, name)
        if key in seen:
            errs.add(path + ("name",), "APPLICATION_COMMANDS_DUPLICATE_NAME", f"Application command names must be unique: {name}")
        seen.add(key)
    if n_chat > 100:
        errs.add((), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")


def _command_name(name: Any, path: tuple[Any, ...], errs: FormErrors) -> None:
    if not isinstance(name, str) or not COMMAND_NAME_RE.match(name) or name != name.lower():
        errs.add(path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")


def _options(options: Any, path: tuple[Any, ...], errs: FormErrors, depth: int) -> None:
    options = _max_items(errs, path, options, 25)
    names: set[str] = set()
    optional_seen = False
    for i, opt in enumerate(options):
        opath = path + (i,)
        if not isinstance(opt, dict):
            errs.add(opath, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        _command_name(opt.get("name"), opath + ("name",), errs)
        _length(errs, opath + ("description",), opt.get("description"), 1, 100)
        if opt.get("name") in names:
            errs.add(opath + ("name",), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option names must be unique")
        names.add(opt.get("name"))
        otype = opt.get("type")
        if otype in (1, 2):
            if (otype == 2 and depth > 0) or (otype == 1 and depth > 1):
                errs.add(opath + ("type",), "APPLICATION_COMMAND_OPTION_TYPE_INVALID",
                         "Subcommands and groups can only be nested one level (group > subcommand)")
            _options(opt.get("options"), opath + ("options",), errs, depth + 1)
            continue
        if opt.get("required"):
            if optional_seen:
                errs.add(opath + ("required",), "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                         "Required options must be placed before non-required options")
        else:
            optional_seen = True
        _max_items(errs, opath + ("choices",), opt.get("choices"), MAX_CHOICES)
        if opt.get("choices") and opt.get("autocomplete"):
            errs.add(opath + ("autocomplete",), "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                     "Autocomplete cannot be set on options with choices")


# -- mentions ----------------------------------------------------------------------------------------
_USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
_ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")


def compute_mentions(content: str, allowed: dict[str, Any] | None) -> tuple[list[str], list[str], bool]:
    """(user ids, role ids, everyone) that Discord would ping for ``content`` under ``allowed_mentions``."""
    users = list(dict.fromkeys(_USER_MENTION.findall(content or "")))
    roles = list(dict.fromkeys(_ROLE_MENTION.findall(content or "")))
    everyone = "@everyone" in (content or "") or "@here" in (content or "")
    if allowed is None:
        return users, roles, everyone
    parse = allowed.get("parse") or []
    allowed_users = {str(u) for u in allowed.get("users") or []}
    allowed_roles = {str(r) for r in allowed.get("roles") or []}
    users = [u for u in users if "users" in parse or u in allowed_users]
    roles = [r for r in roles if "roles" in parse or r in allowed_roles]
    return users, roles, everyone and "everyone" in parse
