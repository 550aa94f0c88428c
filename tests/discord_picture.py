"""An HTML likeness of a Discord message (dark theme): its text, its embed and its buttons, from the same
dicts discord.py sends (`Embed.to_dict()`, `View.to_components()`). tests/test_docs.py screenshots it
with Chromium for the user guide's pictures. Only what the bot uses is drawn: mentions, **bold**,
`code`, one embed with fields, button rows and select menus, and attached pictures."""

from __future__ import annotations

import html
import re
from typing import Any

STYLE = """
body { margin: 0; background: #313338; font: 15px/1.375 'DejaVu Sans', sans-serif; color: #dbdee1; }
.message { display: flex; gap: 16px; padding: 14px 16px; width: 760px; }
.avatar { width: 40px; height: 40px; border-radius: 50%; background: #5865f2; flex: none; }
.name { color: #f2f3f5; font-weight: 600; } .tag { background: #5865f2; color: #fff; font-size: 10px;
  border-radius: 3px; padding: 1px 4px; margin-left: 4px; vertical-align: 2px; } .time { color: #949ba4;
  font-size: 12px; margin-left: 6px; }
.mention { background: rgba(88,101,242,.3); color: #c9cdfb; border-radius: 3px; padding: 0 2px; }
code { background: #2b2d31; border-radius: 3px; padding: 1px 3px; font-family: 'DejaVu Sans Mono', monospace; font-size: 13px; }
.embed { margin-top: 6px; background: #2b2d31; border-left: 4px solid; border-radius: 4px; padding: 8px 16px 12px 12px; max-width: 500px; }
.embed .title { color: #f2f3f5; font-weight: 600; margin-bottom: 4px; }
.fields { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; margin-top: 8px; }
.field { grid-column: span 1; } .field.wide { grid-column: 1 / -1; } .field b { display: block; color: #f2f3f5; font-size: 14px; }
.picture { margin-top: 8px; border-radius: 8px; width: 300px; height: 300px; }
.row { display: flex; gap: 8px; margin-top: 8px; flex-wrap: wrap; }
.button { border-radius: 3px; padding: 2px 16px; height: 32px; line-height: 32px; color: #fff; font-size: 14px; background: #4e5058; }
.button.s1 { background: #5865f2; } .button.s3 { background: #248046; } .button.s4 { background: #da373c; }
.select { width: 400px; background: #1e1f22; border-radius: 3px; padding: 8px; color: #949ba4; }
"""
BOT = "ComfyUI"


def message(content: str = "", embed: dict[str, Any] | None = None, components: list[dict] | None = None,
            picture: str | None = None, names: dict[int, str] | None = None) -> str:
    """A whole page holding one message by the bot; `picture` is an image URL, `names` user ids -> names."""
    body = [f'<div class="text">{text(content, names or {})}</div>' if content else ""]
    if picture:
        body.append(f'<img class="picture" src="{html.escape(picture)}">')
    if embed:
        body.append(_embed(embed, names or {}))
    body += [_row(row) for row in components or ()]
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>"
            f"<div class='message' id='message'><div class='avatar'></div><div>"
            f"<div><span class='name'>{BOT}</span><span class='tag'>APP</span><span class='time'>Today at 18:00</span></div>"
            f"{''.join(body)}</div></div></body></html>")


def text(markdown: str, names: dict[int, str]) -> str:
    """Discord's markdown, as far as the bot writes it, in HTML."""
    out = html.escape(markdown, quote=False)
    out = re.sub(r"&lt;@!?(\d+)&gt;", lambda m: f'<span class="mention">@{names.get(int(m[1]), "someone")}</span>', out)
    out = re.sub(r"&lt;#(\d+)&gt;", '<span class="mention">#age-restricted</span>', out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return out.replace("\n", "<br>")


def _embed(embed: dict[str, Any], names: dict[int, str]) -> str:
    color = f"#{embed.get('color', 0x4E5058):06x}"
    parts = [f'<div class="title">{text(embed["title"], names)}</div>' if embed.get("title") else "",
             f'<div>{text(embed["description"], names)}</div>' if embed.get("description") else ""]
    fields = "".join(f'<div class="field{"" if field.get("inline") else " wide"}"><b>{text(field["name"], names)}</b>'
                     f'{text(field["value"], names)}</div>' for field in embed.get("fields", ()))
    return f'<div class="embed" style="border-color:{color}">{"".join(parts)}<div class="fields">{fields}</div></div>'


def _row(row: dict[str, Any]) -> str:
    items = []
    for item in row.get("components", ()):
        if item.get("type") == 2:
            emoji = (item.get("emoji") or {}).get("name") or ""
            label = html.escape(f"{emoji} {item.get('label') or ''}".strip())
            items.append(f'<span class="button s{item.get("style", 2)}">{label}</span>')
        else:
            items.append(f'<span class="select">{html.escape(item.get("placeholder") or "Choose…")}</span>')
    return f'<div class="row">{"".join(items)}</div>'
