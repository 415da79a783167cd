"""A small, safe Markdown subset for the labeling guidelines.

Everything the author wrote is HTML-escaped first; only the tags below are ever produced, so
raw HTML in the text shows as text and cannot run. Blocks are separated by blank lines:

- ``# Title`` .. ``### Title``: headings (rendered two levels down, under the page's own);
- lines starting with ``- `` or ``* ``: a bullet list; ``1. ``: a numbered list;
- anything else: a paragraph (single line breaks kept).

Inline: ```code```, ``**bold**``, ``*italic*`` and ``[text](https://...)`` links (http and
https only, opened without a referrer). Plain text renders as paragraphs.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

__all__ = ["render_markdown"]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d{1,9}[.)]\s+(.*)$")
# applied to escaped text: '<', '>', '&' and quotes are entities already, '*[]()' are not
_INLINE = re.compile(r"\*\*(?P<b>[^*\n]+?)\*\*"
                     r"|\*(?P<i>[^*\s][^*\n]*?)\*"
                     r"|\[(?P<t>[^\[\]\n]+)\]\((?P<u>https?://[^\s()]+)\)")


def _span(m: re.Match) -> str:
    if m.group("b") is not None:
        return f"<strong>{m.group('b')}</strong>"
    if m.group("i") is not None:
        return f"<em>{m.group('i')}</em>"
    return f'<a href="{m.group("u")}" rel="noopener noreferrer nofollow">{m.group("t")}</a>'


def _inline(text: str) -> str:
    """Escaped HTML of one block's text; odd-numbered parts between backticks are code."""
    parts = text.split("`")
    if len(parts) % 2 == 0:   # an unmatched backtick is a literal one
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    out = []
    for k, part in enumerate(parts):
        e = str(escape(part))
        out.append(f"<code>{e}</code>" if k % 2 else _INLINE.sub(_span, e))
    return "".join(out)


def _blocks(text: str) -> list[list[str]]:
    blocks, cur = [], []
    for line in text.split("\n"):
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def render_markdown(text: str) -> Markup:
    """Safe HTML of ``text`` (Markdown subset or plain text); "" for none."""
    html: list[str] = []
    for block in _blocks((text or "").replace("\r\n", "\n").replace("\r", "\n")):
        items: list[tuple[str, str]] = []   # (list tag, item text) of a list block
        para: list[str] = []

        def flush_para():
            if para:
                html.append("<p>" + "<br>".join(_inline(x.strip()) for x in para) + "</p>")
                para.clear()

        def flush_list():
            if items:
                tag = items[0][0]
                html.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for _, t in items) + f"</{tag}>")
                items.clear()

        for line in block:
            h, b, n = _HEADING.match(line), _BULLET.match(line), _NUMBERED.match(line)
            if h:
                flush_para(), flush_list()
                level = min(len(h.group(1)) + 2, 6)
                html.append(f"<h{level}>{_inline(h.group(2))}</h{level}>")
            elif b or n:
                flush_para()
                tag = "ul" if b else "ol"
                if items and items[0][0] != tag:
                    flush_list()
                items.append((tag, (b or n).group(1).strip()))
            elif items and line.startswith(("  ", "\t")):   # a list item's continuation line
                items[-1] = (items[-1][0], items[-1][1] + " " + line.strip())
            else:
                flush_list()
                para.append(line)
        flush_para()
        flush_list()
    return Markup("\n".join(html))
