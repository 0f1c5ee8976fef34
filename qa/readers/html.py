"""HTML with selectolax: the main text only, headings as passage titles.

Rules, measured on a saved Wikipedia page (``wikipedia-duck.html``): the main
content is the first of ``.mw-parser-output``, ``main``, ``[role=main]``, ``article``,
``#content`` or ``body``; inside it navigation,
menus, headers and footers, scripts, styles, forms, edit links, reference
lists and navigation boxes are dropped. Each block element (paragraph, list
item, table cell, heading) becomes a passage; whitespace inside a block
collapses as a browser shows it.

The bytes are decoded as a browser would (``qa.readers.encodings``: a
byte-order mark, else a known ``<meta charset>`` label, else UTF-8 or
windows-1252); binary content is refused. The parser spends time in
proportion to the nesting depth at every tag, so elements nested deeper than
``MAX_DEPTH`` are unwrapped (their text stays, at the depth limit) before
parsing: a page nested 100,000 levels deep once took 18 s to parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from qa.readers.base import Extracted, UnreadableFileError, check_text, join_blocks
from qa.readers.encodings import decode_as, sniff_html

MAX_DEPTH = 512  # elements nested deeper are unwrapped before parsing (browsers stop nesting at 512 too)

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
_BLOCK_END: Iterator = iter(())  # marks, on the walk's stack, a block element to end once its children are done
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Elements whose end tag may be left out, or that never hold others: they do not nest.
_FLAT = {
    "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "rb", "rt", "rp", "rtc", "tbody", "thead",
    "tfoot", "colgroup", "caption", "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
    "source", "track", "wbr", "param", "keygen", "html", "head", "body",
}  # fmt: skip
_RAW_TEXT = {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript"}
_TAG_NAME = re.compile(r"(/?)([A-Za-z][^\s/>]*)")
_RAW_END = {tag: re.compile(rf"</{tag}[\s/>]", re.IGNORECASE) for tag in _RAW_TEXT}


def _decode(name: str, raw: bytes) -> tuple[str, str]:
    encoding = sniff_html(raw)
    # A NUL byte is no character in any encoding but UTF-16's: binary, refused before decoding it all.
    if not encoding.startswith("UTF-16") and b"\x00" in raw[:4096]:
        raise UnreadableFileError(f"{name} is not an HTML file (binary content)")
    return check_text(decode_as(raw, encoding), name, "an HTML file"), encoding.lower()


def _unwrap_deep(source: str) -> str:
    """``source`` without the start and end tags of elements nested deeper than MAX_DEPTH.

    One pass over the tags (comments and the insides of scripts and styles
    skipped), each costing at most MAX_DEPTH steps: linear in the source.
    Text is never removed, only tags.
    """
    stack: list[str] = []
    unwrapped: dict[str, int] = {}  # tag name -> start tags removed and not yet closed
    cuts: list[tuple[int, int]] = []
    pos = 0
    while (lt := source.find("<", pos)) >= 0:
        if source.startswith("<!--", lt):
            end = source.find("-->", lt + 4)
            pos = len(source) if end < 0 else end + 3
            continue
        gt = source.find(">", lt + 1)
        if gt < 0:
            break
        m = _TAG_NAME.match(source, lt + 1, gt)
        pos = gt + 1
        if m is None:
            continue
        closing, tag = bool(m.group(1)), m.group(2).lower()
        if not closing and tag in _RAW_TEXT:
            closed = _RAW_END[tag].search(source, pos)
            pos = len(source) if closed is None else closed.start()
            continue
        if tag in _FLAT or (not closing and source[gt - 1] == "/"):
            continue
        if not closing:
            if len(stack) >= MAX_DEPTH:
                unwrapped[tag] = unwrapped.get(tag, 0) + 1
                cuts.append((lt, gt + 1))
            else:
                stack.append(tag)
        elif unwrapped.get(tag):
            unwrapped[tag] -= 1
            cuts.append((lt, gt + 1))
        elif tag in stack:
            while stack.pop() != tag:
                pass
    if not cuts:
        return source
    pieces, last = [], 0
    for start, end in cuts:
        pieces.append(source[last:start])
        last = end
    pieces.append(source[last:])
    return "".join(pieces)


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

    source, encoding = _decode(name, raw)
    tree = LexborHTMLParser(_unwrap_deep(source))
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

    # Depth first, with a stack of iterators (no recursion: a deep page is not a RecursionError).
    # A block element ends the block before it and after it (the _BLOCK_END marker).
    stack = [iter(main.iter(include_text=True))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            if stack and stack[-1] is _BLOCK_END:
                stack.pop()
                end_block()
            continue
        if child.tag == "-text":
            current.append(child.text_content or "")
        elif child.tag in ("-comment", "!doctype") or _dropped(child):
            continue
        elif child.tag in _HEADINGS:
            end_block()
            current.append(child.text())
            end_block(_HEADINGS[child.tag])
        elif child.tag in _BLOCK:
            end_block()
            stack.append(_BLOCK_END)
            stack.append(iter(child.iter(include_text=True)))
        else:
            stack.append(iter(child.iter(include_text=True)))
    end_block()
    if title and (not blocks or blocks[0][0] != title):
        blocks.insert(0, (title, 1))
    text, layout = join_blocks(blocks)  # block texts are whitespace-collapsed already
    return Extracted(text, encoding, layout, title)
