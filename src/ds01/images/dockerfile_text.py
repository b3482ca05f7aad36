"""Dockerfile text helpers with no heavy imports (the CLI uses them on every launch):
instruction and word splitting as Docker does them (the one port of the engine's parser;
``images.dockerfile_check`` builds on it), and the content hash that decides "nothing changed"."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from ds01.errors import InvalidInput


# --------------------------------------------------------------------------- Docker's parser
#
# A port of the engine's Dockerfile parser (moby/buildkit ``frontend/dockerfile/parser``, the one
# the classic builder of Engine 20.10 uses), so that DS01 checks the instructions the engine will
# run, not a look-alike. The rules, exactly:
#
# * lines end at ``\n``; one ``\r`` before it is dropped; a UTF-8 BOM opens the file silently;
# * parser directives (``# escape=…``, any spacing) count only before the first other line;
# * an instruction's first line loses its leading whitespace; a line that is then a comment or
#   empty is skipped;
# * a line ending in the escape character plus spaces/tabs continues: the escape and what follows
#   it are cut and the next line is appended *as is* (no space added); inside a continuation,
#   comment lines and empty or whitespace-only lines are skipped (they do *not* end it);
# * the keyword is the first word (``[ \t\v\f\r]`` separated, any case); builder flags
#   (``--name=value``, quotes and escapes processed) come next, up to the first word without ``--``.

DIRECTIVE_RE = re.compile(r"^#[ \t]*escape[ \t]*=[ \t]*(.).*\Z", re.S)
# Go's unicode.IsSpace for the code points a Dockerfile can hold.
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                      + "".join(chr(c) for c in range(0x2000, 0x200B)))
# unicode.IsSpace of one *byte* read as a rune (extractBuilderFlags indexes the line by byte).
_GO_SPACE_BYTE = frozenset(b"\t\n\v\f\r \x85\xa0")
_CMD_SPLIT = re.compile(r"[\t\v\f\r ]+")
MAX_LINE = 65535  # bufio.Scanner's limit per line in the engine


def _lstrip(s: str) -> str:
    i = 0
    while i < len(s) and s[i] in _GO_SPACE:
        i += 1
    return s[i:]


def _strip(s: str) -> str:
    j = len(s)
    while j > 0 and s[j - 1] in _GO_SPACE:
        j -= 1
    return _lstrip(s[:j])


class Instruction:
    """One instruction: ``keyword`` (lowercase), ``line`` (the text the engine parses, after
    joining), ``flags`` (``[(name, value or None)]``, quotes processed), ``rest`` (after the
    flags) and ``lineno`` (1-based line of its first line)."""

    __slots__ = ("keyword", "line", "flags", "rest", "lineno")

    def __init__(self, keyword: str, line: str, flags: list[tuple[str, str | None]], rest: str, lineno: int):
        self.keyword, self.line, self.flags, self.rest, self.lineno = keyword, line, flags, rest, lineno

    def flag(self, name: str) -> str | None:
        return next((v for n, v in self.flags if n.lower() == name), None)

    def __repr__(self) -> str:
        return f"Instruction({self.line!r})"


def _physical_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def strip_continuation(line: str, escape: str) -> tuple[str, bool]:
    """(line without the continuation, True) when ``line`` ends in ``escape`` + spaces/tabs."""
    j = len(line)
    while j > 0 and line[j - 1] in " \t":
        j -= 1
    if j > 0 and line[j - 1] == escape:
        return line[: j - 1], True
    return line, False


def joined_lines(text: str) -> list[tuple[int, str]]:
    """``(lineno, line)`` for every instruction, joined as the engine joins them. Raises
    InvalidInput for an escape directive other than ``\\`` (DS01 supports the default only)
    and for a repeated one (the engine refuses it too)."""
    out: list[tuple[int, str]] = []
    escape = "\\"
    directives_done = False
    escape_seen = False

    def directive(token: str) -> None:
        nonlocal directives_done, escape_seen
        if directives_done:
            return
        m = DIRECTIVE_RE.match(token.lower())
        if not m:
            directives_done = True
            return
        if escape_seen:
            raise InvalidInput("the Dockerfile has more than one escape directive")
        escape_seen = True
        if m.group(1) != "\\":
            raise InvalidInput("the Dockerfile's escape directive is not supported by DS01",
                               "remove the '# escape=' line and use backslash continuations")

    lines = _physical_lines(text)
    i = 0
    while i < len(lines):
        token = _lstrip(lines[i])
        i += 1
        directive(token)
        if token.startswith("#"):
            continue
        start = i
        line, more = strip_continuation(token, escape)
        if not more and line == "":
            continue
        while more and i < len(lines):
            raw = lines[i]
            i += 1
            directive(raw)
            if _lstrip(raw).startswith("#"):
                continue  # a comment inside a continuation: skipped
            if _lstrip(raw) == "":
                continue  # an empty line inside a continuation: skipped, the instruction goes on
            seg, more = strip_continuation(raw, escape)
            line += seg
        out.append((start, line))
    return out


_GO_SPACE_ORD = frozenset(map(ord, _GO_SPACE))
_QUOTES = (0x22, 0x27)
_ESC = 0x5C  # the escape character (only the default is supported, see joined_lines)


def _scan_words(line: str, builder: bool) -> tuple[str, list[str]]:
    """The engine's two word splitters, one state machine; they differ only where ``builder`` says.

    * ``parseWords`` (``builder=False``, LABEL/ENV ``key=value`` splitting): reads runes,
      ``unicode.IsSpace`` separates words; quotes and escapes stay in the word, and inside single
      quotes the escape is an ordinary character.
    * ``extractBuilderFlags`` (``builder=True``): reads the UTF-8 *bytes* (each byte taken as a
      rune for IsSpace); quotes and escapes are processed away; stops at the first word that does
      not start with ``--`` (or after a bare ``--``) and returns the rest of the line from there.

    Returns (rest of the line, words); the rest is always "" for parseWords."""
    if builder:
        raw = line.encode("utf-8", "surrogateescape")
        seq: bytes | list[int] = raw
        spaces = _GO_SPACE_BYTE
    else:
        seq = [ord(c) for c in line]
        spaces = _GO_SPACE_ORD

    def text(w: list[int]) -> str:
        return bytes(w).decode("utf-8", "surrogateescape") if builder else "".join(map(chr, w))

    def rest(at: int) -> str:
        return raw[at:].decode("utf-8", "surrogateescape")

    IN_SPACES, IN_WORD, IN_QUOTE = 0, 1, 2
    words: list[str] = []
    word: list[int] = []
    phase, quote, blank_ok = IN_SPACES, 0, False
    pos, n = 0, len(seq)
    while pos <= n:
        ch = seq[pos] if pos < n else 0
        if phase == IN_SPACES:
            if pos == n:
                break
            if ch in spaces:
                pos += 1
                continue
            if builder and (ch != 0x2D or pos + 1 == n or seq[pos + 1] != 0x2D):
                return rest(pos), words  # only words starting with "--" are flags
            phase = IN_WORD
        if pos == n:  # the end, inside a word or quote
            if (blank_ok or word) and not (builder and text(word) == "--"):
                words.append(text(word))
            break
        if phase == IN_WORD:
            if ch in spaces:
                phase = IN_SPACES
                if builder and text(word) == "--":
                    return rest(pos), words
                if blank_ok or word:
                    words.append(text(word))
                word, blank_ok = [], False
                pos += 1
                continue
            if ch in _QUOTES:
                quote, blank_ok, phase = ch, True, IN_QUOTE
                if builder:
                    pos += 1
                    continue
            if ch == _ESC:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape at the very end is dropped
                if not builder:
                    word.append(ch)
                pos += 1
                ch = seq[pos]
            word.append(ch)
            pos += 1
            continue
        # IN_QUOTE
        if ch == quote:
            phase = IN_WORD
            if builder:
                pos += 1
                continue
        if ch == _ESC and (builder or quote != 0x27):
            if pos + 1 == n:
                phase = IN_WORD
                pos += 1
                continue
            if not builder:
                word.append(ch)
            pos += 1
            ch = seq[pos]
        word.append(ch)
        pos += 1
    return "", words


def builder_flags(line: str) -> tuple[str, list[str]]:
    """extractBuilderFlags: (rest of the line, the ``--flag`` words before it), quotes and
    escapes processed. Works on the UTF-8 bytes, as the engine does."""
    return _scan_words(line, builder=True)


def parse_words(rest: str) -> list[str]:
    """parseWords (LABEL/ENV key=value splitting): whitespace outside quotes ends a word;
    quotes and escapes stay in the word."""
    return _scan_words(rest, builder=False)[1]


def parse_instructions(text: str) -> list[Instruction]:
    """Every instruction of a Dockerfile as the engine parses it (see the rules above)."""
    out = []
    for lineno, line in joined_lines(text):
        parts = _CMD_SPLIT.split(_strip(line), maxsplit=1)
        keyword = parts[0].lower()
        rest, words = builder_flags(parts[1]) if len(parts) == 2 else ("", [])
        flags: list[tuple[str, str | None]] = []
        for w in words:
            name, eq, value = w[2:].partition("=")
            flags.append((name, value if eq else None))
        out.append(Instruction(keyword, line, flags, _strip(rest), lineno))
    return out


def logical_lines(text: str) -> list[str]:
    """Dockerfile instructions with ``\\`` continuations joined and comments dropped, exactly as
    the engine joins them (see :func:`joined_lines`), whitespace-trimmed."""
    return [_strip(line) for _, line in joined_lines(text)]


def shorten(text: str, n: int) -> str:
    """``text`` with whitespace collapsed, cut to ``n`` characters (``…`` marks the cut)."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def content_hash(
    dockerfile_text: str,
    requirements_bytes: bytes | None = None,
    other_context_files: Mapping[str, bytes] | None = None,
) -> str:
    """``sha256:<hex>`` over everything that decides the build's result, for "nothing changed,
    skip the rebuild". Each part is length-prefixed so no two different inputs can collide by
    concatenation; other files are hashed in path order so dict order does not matter. Callers
    should put the base image's digest and the build args in ``other_context_files`` too."""
    h = hashlib.sha256()

    def part(tag: str, data: bytes) -> None:
        h.update(tag.encode() + b"\0" + len(data).to_bytes(8, "big") + data)

    part("dockerfile", dockerfile_text.encode("utf-8"))
    if requirements_bytes is None:
        part("no-requirements", b"")
    else:
        part("requirements", requirements_bytes)
    for path in sorted(other_context_files or {}):
        part("file:" + path, (other_context_files or {})[path])
    return "sha256:" + h.hexdigest()
