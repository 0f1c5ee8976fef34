"""The WHATWG Encoding standard's label table and the HTML encoding sniffing algorithm.

``sniff_html(raw)`` decides how an HTML file's bytes are decoded, as a browser
does without an HTTP header: a byte-order mark first; else a ``<meta
charset>`` (or ``http-equiv="content-type"``) in the first 1024 bytes whose
label the standard knows (an unknown label is ignored, as browsers ignore
it); else UTF-8 when the bytes are valid UTF-8, and windows-1252 otherwise.

>>> sniff_html("<meta charset=latin1>Café".encode("cp1252"))
'windows-1252'
"""

from __future__ import annotations

import codecs
import re

# https://encoding.spec.whatwg.org/encodings.json: encoding name -> (Python codec, its labels).
_TABLE: dict[str, tuple[str, str]] = {
    "UTF-8": ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    "IBM866": ("cp866", "866 cp866 csibm866 ibm866"),
    "ISO-8859-2": ("iso8859_2", "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 "
                                "iso_8859-2:1987 l2 latin2"),
    "ISO-8859-3": ("iso8859_3", "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 "
                                "iso_8859-3:1988 l3 latin3"),
    "ISO-8859-4": ("iso8859_4", "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 "
                                "iso_8859-4:1988 l4 latin4"),
    "ISO-8859-5": ("iso8859_5", "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
                                "iso_8859-5:1988"),
    "ISO-8859-6": ("iso8859_6", "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 "
                                "iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    "ISO-8859-7": ("iso8859_7", "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 "
                                "iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek"),
    "ISO-8859-8": ("iso8859_8", "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 "
                                "iso88598 iso_8859-8 iso_8859-8:1988 visual"),
    "ISO-8859-8-I": ("iso8859_8", "csiso88598i iso-8859-8-i logical"),
    "ISO-8859-10": ("iso8859_10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    "ISO-8859-13": ("iso8859_13", "iso-8859-13 iso8859-13 iso885913"),
    "ISO-8859-14": ("iso8859_14", "iso-8859-14 iso8859-14 iso885914"),
    "ISO-8859-15": ("iso8859_15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    "ISO-8859-16": ("iso8859_16", "iso-8859-16"),
    "KOI8-R": ("koi8_r", "cskoi8r koi koi8 koi8-r koi8_r"),
    "KOI8-U": ("koi8_u", "koi8-ru koi8-u"),
    "macintosh": ("mac_roman", "csmacintosh mac macintosh x-mac-roman"),
    "windows-874": ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    "windows-1250": ("cp1250", "cp1250 windows-1250 x-cp1250"),
    "windows-1251": ("cp1251", "cp1251 windows-1251 x-cp1251"),
    "windows-1252": ("windows-1252", "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 "
                                     "iso8859-1 iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 "
                                     "x-cp1252"),
    "windows-1253": ("cp1253", "cp1253 windows-1253 x-cp1253"),
    "windows-1254": ("cp1254", "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
                               "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254"),
    "windows-1255": ("cp1255", "cp1255 windows-1255 x-cp1255"),
    "windows-1256": ("cp1256", "cp1256 windows-1256 x-cp1256"),
    "windows-1257": ("cp1257", "cp1257 windows-1257 x-cp1257"),
    "windows-1258": ("cp1258", "cp1258 windows-1258 x-cp1258"),
    "x-mac-cyrillic": ("mac_cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    "GBK": ("gb18030", "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk"),
    "gb18030": ("gb18030", "gb18030"),
    "Big5": ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    "EUC-JP": ("euc_jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    "ISO-2022-JP": ("iso2022_jp", "csiso2022jp iso-2022-jp"),
    "Shift_JIS": ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    "EUC-KR": ("cp949", "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 "
                        "ksc_5601 windows-949"),
    "replacement": ("replacement", "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr replacement"),
    "UTF-16BE": ("utf-16-be", "unicodefffe utf-16be"),
    "UTF-16LE": ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
    "x-user-defined": ("windows-1252", "x-user-defined"),
}  # fmt: skip
LABELS: dict[str, str] = {label: name for name, (_, labels) in _TABLE.items() for label in labels.split()}

_BOMS = ((b"\xef\xbb\xbf", "UTF-8"), (b"\xfe\xff", "UTF-16BE"), (b"\xff\xfe", "UTF-16LE"))
_COMMENT = re.compile(rb"<!--.*?(?:-->|$)", re.DOTALL)
_META = re.compile(rb"<meta[\s/][^>]*", re.IGNORECASE)
_ATTRIBUTE = re.compile(rb"""([^\s/>=]+)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s>]*))?""")
_CONTENT_CHARSET = re.compile(rb"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))""", re.IGNORECASE)
# windows-1252 as the standard defines it: the five bytes cp1252 leaves undefined are C1 controls.
_WINDOWS_1252 = {i: bytes([i]).decode("cp1252", "replace").replace("\ufffd", chr(i)) for i in range(0x80, 0xA0)}


def encoding_for(label: str) -> str | None:
    """The standard's encoding name for a label ("latin1" -> "windows-1252"), or None for a label it does not know."""
    return LABELS.get(label.strip("\t\n\f\r ").lower())


def _prescan(head: bytes) -> str | None:
    """The encoding a ``<meta>`` in ``head`` declares (HTML's prescan, simplified to what pages write)."""
    for m in _META.finditer(_COMMENT.sub(b"", head)):
        attributes = {}
        for a in _ATTRIBUTE.finditer(m.group(0), 5):
            name = a.group(1).lower()
            if name not in attributes:  # the first of a repeated attribute counts
                attributes[name] = (a.group(2) or b"").strip(b"\"'")
        label = None
        if b"charset" in attributes:
            label = attributes[b"charset"]
        elif attributes.get(b"http-equiv", b"").lower() == b"content-type" and b"content" in attributes:
            c = _CONTENT_CHARSET.search(attributes[b"content"])
            label = next((g for g in c.groups() if g is not None), None) if c else None
        name = encoding_for(label.decode("latin-1")) if label is not None else None
        if name is None:
            continue  # no label, or one the standard does not know: look further
        if name in ("UTF-16BE", "UTF-16LE"):
            return "UTF-8"  # a page that could say so in ASCII is not UTF-16
        return "windows-1252" if name == "x-user-defined" else name
    return None


def sniff_html(raw: bytes) -> str:
    """The encoding name: a byte-order mark's, else the first known ``<meta>`` label's, else a default."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name
    declared = _prescan(raw[:1024])
    if declared is not None:
        return declared
    try:
        raw.decode("utf-8")
        return "UTF-8"
    except UnicodeDecodeError:
        return "windows-1252"


def decode_as(raw: bytes, name: str) -> str:
    """Decode with the standard's encoding ``name``; bytes it cannot map become U+FFFD, as in a browser."""
    codec = _TABLE[name][0]
    for bom, bom_name in _BOMS:
        if name == bom_name and raw.startswith(bom):
            raw = raw[len(bom) :]
    if codec == "windows-1252":
        return raw.decode("latin-1").translate(_WINDOWS_1252)
    if codec == "replacement":
        return "\ufffd" if raw else ""
    return codecs.decode(raw, codec, "replace")
