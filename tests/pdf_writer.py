"""A tiny PDF writer for tests: text in the standard Helvetica font, placed where asked.

Builds the files the reader tests need (columns, running heads, hyphenated
lines, 1,000 pages, damaged, encrypted and image-only files) without
committing binaries.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    """One line of text: its left edge and baseline in points from the page's bottom-left corner."""

    x: float
    y: float
    text: str
    size: float = 10.0
    rotated: bool = False  # turned 90 degrees, as in a margin note


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def make_pdf(
    pages: list[list[Text]],
    *,
    width: float = 612,
    height: float = 792,
    encrypted: bool = False,
    image_only: bool = False,
    ligatures: bool = False,
) -> bytes:
    """The bytes of a PDF with one page per list of lines.

    With ``ligatures``, the font's ToUnicode map turns ``°`` and ``±`` into the
    ligature characters U+FB01 (fi) and U+FB02 (fl), as many real PDFs do.
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    tree = add(b"")
    to_unicode = b""
    if ligatures:
        cmap = (
            b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Lig def "
            b"1 begincodespacerange <00> <FF> endcodespacerange "
            b"2 beginbfchar <B0> <FB01> <B1> <FB02> endbfchar endcmap "
            b"CMapName currentdict /CMap defineresource pop end end"
        )
        cmap_id = add(b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream")
        to_unicode = b" /ToUnicode %d 0 R" % cmap_id
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding" + to_unicode + b" >>")
    image = add(b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
                b"/BitsPerComponent 8 /Length 1 >>\nstream\n\x80\nendstream") if image_only else 0  # fmt: skip
    kids = []
    for lines in pages:
        ops = []
        if image_only:
            ops.append(f"q {width - 100} 0 0 {height - 100} 50 50 cm /Im1 Do Q".encode())
        for t in lines:
            matrix = f"0 1 -1 0 {t.x} {t.y}" if t.rotated else f"1 0 0 1 {t.x} {t.y}"
            ops.append(b"BT /F1 %s Tf %s Tm (" % (str(t.size).encode(), matrix.encode()) + _escape(t.text) + b") Tj ET")
        stream = b"\n".join(ops)
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        xobjects = f"/XObject << /Im1 {image} 0 R >>" if image_only else ""
        kids.append(
            add(
                f"<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 {width} {height}] /Contents {content} 0 R "
                f"/Resources << /Font << /F1 {font} 0 R >> {xobjects} >> >>".encode()
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {tree} 0 R >>".encode()
    objects[tree - 1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    encrypt = 0
    if encrypted:
        encrypt = add(
            b"<< /Filter /Standard /V 1 /R 2 /Length 40 /P -4 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> >>"
        )
    extra = f" /Encrypt {encrypt} 0 R /ID [<{'ab' * 16}> <{'ab' * 16}>]" if encrypted else ""
    return serialize(objects, root=catalog, trailer=extra)


def serialize(objects: list[bytes], *, root: int = 1, trailer: str = "") -> bytes:
    """A PDF file of ``objects`` (numbered from 1), with its cross-reference table and trailer."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root {root} 0 R{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def pdf_with_content(content: bytes) -> bytes:
    """A one-page PDF whose content stream is ``content``, Flate-compressed."""
    return pdf_with_stream(zlib.compress(content, 9))


def pdf_with_stream(data: bytes) -> bytes:
    """A one-page PDF whose content stream is ``data``, already Flate-compressed."""
    return serialize([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])  # fmt: skip


def pdf_bomb(inflated: int) -> bytes:
    """A small PDF whose one content stream inflates to ``inflated`` bytes: a line of text, then spaces."""
    z = zlib.compressobj(9)
    parts = [z.compress(b"BT /F1 12 Tf 72 700 Td (The bomb page says hello.) Tj ET\n")]
    block = b" " * (1 << 20)
    parts += [z.compress(block) for _ in range(inflated >> 20)]
    parts.append(z.flush())
    return pdf_with_stream(b"".join(parts))


def column_page(columns: list[list[str]], *, head: str = "", foot: str = "", x0: float = 50, gutter: float = 20,
                width: float = 612, top: float = 700, leading: float = 12, size: float = 10) -> list[Text]:  # fmt: skip
    """A page of text columns of equal width, with a running head and a footer line."""
    col_width = (width - 2 * x0 - gutter * (len(columns) - 1)) / len(columns)
    lines = [Text(x0, 760, head, 8)] if head else []
    for c, column in enumerate(columns):
        x = x0 + c * (col_width + gutter)
        lines += [Text(x, top - i * leading, line, size) for i, line in enumerate(column)]
    if foot:
        lines.append(Text(x0, 30, foot, 8))
    return lines
