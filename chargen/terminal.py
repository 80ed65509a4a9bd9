"""Text from outside (stored generations, primes, paths, file names) made safe to print on a terminal.

A terminal obeys what it is sent: ESC starts a control sequence (colours, cursor moves, window titles,
clipboard writes), BEL rings, CR returns to the line's start and lets a later text hide an earlier one,
and C1 controls are escapes of their own on some terminals. Bidirectional overrides reorder what is
shown. :func:`printable` is the one function every command prints such text through; the text a user
asked for as the product (``chargen sample`` on stdout, ``history show --raw``) stays raw.
"""

from __future__ import annotations

import sys
import unicodedata

from chargen.errors import ChargenError

#: Bidirectional embedding, override and isolate controls: they reorder the text around them.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _unsafe(ch: str, keep_newlines: bool) -> bool:
    if ch in "\n\t":
        return not keep_newlines
    if ch in _BIDI:
        return True
    category = unicodedata.category(ch)
    # Cc: C0, DEL and C1 controls; Cs: lone surrogates (unencodable: printing one is an error of its own);
    # Zl/Zp: line and paragraph separators, which some terminals and editors break lines at.
    return category in ("Cc", "Cs") or (not keep_newlines and category in ("Zl", "Zp"))


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a character :func:`printable` would escape (newlines and tabs included):
    names (runs, labels) that hold one are refused rather than escaped at every use."""
    return not text.isprintable() and any(_unsafe(ch, False) for ch in text)


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with every control character, lone surrogate and bidi control as a visible escape.

    ``\\x1b`` stands for ESC, ``\\udc80`` for a lone surrogate, and a backslash stays a backslash
    (escapes are for the eye, not to be parsed back). ``keep_newlines``: newlines and tabs pass
    through (multi-line text such as a generation); otherwise they are escaped too (one-line fields
    such as paths). Anything that is not a string is printed as ``str()`` of it, escaped likewise.
    """
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():
        return text  # the common case (isprintable is False for \n, \t, every control, surrogate and separator)
    return "".join(_escape(ch) if _unsafe(ch, keep_newlines) else ch for ch in text)


def confirm(question: str) -> bool:
    """Ask ``question`` on stderr and read the answer from stdin: True for y/yes, False for anything else.

    Standard input at its end (a script, ``< /dev/null``) is a ChargenError saying so, and the only line
    printed: no answer is not a "no", and not an interruption either (Ctrl-C is; it raises
    KeyboardInterrupt as always). From a terminal the question comes first; from a pipe the answer is
    read first, so that the question is asked only when there is an answer to it."""
    stdin = sys.stdin
    interactive = stdin is not None and stdin.isatty()
    if interactive:
        sys.stderr.write(f"{question} [y/N]: ")
        sys.stderr.flush()
    answer = stdin.readline() if stdin is not None else ""
    if not answer:
        if interactive:
            sys.stderr.write("\n")
        raise ChargenError("no answer: standard input is closed; pass --yes to go on without asking")
    if not interactive:
        sys.stderr.write(f"{question} [y/N]: {printable(answer.strip())}\n")
    return answer.strip().lower() in ("y", "yes")
