"""HTML with selectolax: the main text only, headings as passage titles.

Rules, measured on a saved Wikipedia page (``wikipedia-duck.html``): the main
content is the first of ``.mw-parser-output``, ``main``, ``[role=main]``, ``article``,
``#content`` or ``body``; inside it navigation,
menus, headers and footers, scripts, styles, forms, edit links, reference
lists and navigation boxes are dropped. Each block element (paragraph, list
item, table cell, heading) becomes a passage; whitespace inside a block
collapses as a browser shows it.
"""

from __future__ import annotations

import re

from qa.readers.base import Extracted, UnreadableFileError, join_blocks

_MAIN = (".mw-parser-output", "main", "[role=main]", "article", "#mw-content-text", "#content", "body")
_DROP_TAGS = {
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "button",
    "input", "select", "textarea", "svg", "iframe", "object", "canvas", "math", "img", "link", "meta",
}  # fmt: skip
_DROP_CLASS = re.compile(
    r"(?:^|[\s_-])(?:nav|navbox|navigation|navbar|menu|footer|sidebar|breadcrumbs?|cookie|banner|toc|"
    r"mw-editsection|mw-jump-link|reflist|references|refbegin|reference|mw-references-wrap|catlinks|"
    r"printfooter|noprint|metadata|ambox|hatnote|shortdescription|sistersitebox|authority-control|"
    r"mw-empty-elt|infobox|vector-|mw-portlet|sr-only|visually-hidden)(?:$|[\s_-])",
    re.IGNORECASE,
)
_BLOCK = {
    "p", "div", "section", "li", "dd", "dt", "blockquote", "pre", "figcaption", "caption", "td", "th",
    "tr", "table", "ul", "ol", "dl", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr", "body", "main", "article",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.IGNORECASE)


def _decode(name: str, raw: bytes) -> tuple[str, str]:
    m = _CHARSET.search(raw[:4096])
    for encoding in ([m.group(1).decode("ascii", "replace")] if m else []) + ["utf-8", "cp1252"]:
        try:
            return raw.decode(encoding.lower().replace("utf-8", "utf-8-sig")), encoding.lower()
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("latin-1"), "latin-1"


def _dropped(node) -> bool:  # type: ignore[no-untyped-def]
    if node.tag in _DROP_TAGS:
        return True
    attrs = node.attributes
    if "hidden" in attrs or attrs.get("aria-hidden") == "true" or attrs.get("role") in ("navigation", "banner"):
        return True
    if "display:none" in (attrs.get("style") or "").replace(" ", ""):
        return True
    return bool(_DROP_CLASS.search(attrs.get("class") or "") or _DROP_CLASS.search(attrs.get("id") or ""))


def read(name: str, raw: bytes) -> Extracted:
    """Main text of an HTML page; headings give each passage its heading path."""
    from selectolax.lexbor import LexborHTMLParser

    if b"\x00" in raw[:4096]:
        raise UnreadableFileError(f"{name} is not an HTML file (binary content)")
    source, encoding = _decode(name, raw)
    tree = LexborHTMLParser(source)
    main = None
    for selector in _MAIN:
        # the largest match: a page can hold several (Wikipedia's site notices use .mw-parser-output too)
        found = sorted(tree.css(selector), key=lambda n: len(n.text(deep=True)), reverse=True)
        if found and (len(found[0].text(deep=True).strip()) >= 200 or selector == "body"):
            main = found[0]
            break
    if main is None:
        raise UnreadableFileError(f"{name} holds no HTML body")
    title_node = tree.css_first("h1") or tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""

    blocks: list[tuple[str, int]] = []  # (text, heading level or 0)
    current: list[str] = []

    def end_block(level: int = 0) -> None:
        text = " ".join("".join(current).split())
        if text:
            blocks.append((text, level))
        current.clear()

    def walk(node) -> None:  # type: ignore[no-untyped-def]
        for child in node.iter(include_text=True):
            if child.tag == "-text":
                current.append(child.text_content or "")
                continue
            if child.tag in ("-comment", "!doctype") or _dropped(child):
                continue
            if child.tag in _HEADINGS:
                end_block()
                current.append(child.text())
                end_block(_HEADINGS[child.tag])
            elif child.tag in _BLOCK:
                end_block()
                walk(child)
                end_block()
            else:
                walk(child)

    walk(main)
    end_block()
    if title and (not blocks or blocks[0][0] != title):
        blocks.insert(0, (title, 1))
    text, layout = join_blocks(blocks)  # block texts are whitespace-collapsed already
    return Extracted(text, encoding, layout, title)
