"""Route labels from Django's ``ResolverMatch.route``, regex patterns made readable.

``path()`` routes are templates already (``items/<int:pk>``); ``re_path()`` routes, which
Django REST Framework's routers and the admin use, are raw regexes
(``^snippets/(?P<pk>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$``). ``readable_route_label`` reads
such a route the way the request path would: ``/snippets/<pk>.<format>``.

- a named group becomes ``<name>``, whatever it matches (a named backreference too);
- an unnamed group, a character class, ``\\d``/``\\w``/… and a repeated ``.`` become
  ``<var>`` (Django's admindocs word for them), several in a row one ``<var>``; a group
  with ``|`` is ``<var>`` as a whole;
- a non-capturing group reads as its content;
- anchors, lookarounds, inline flags and comments go; escapes read as the character;
- an optional literal (``/?``, ``s?``, ``(?:/)?``) is left out, as ``reverse()`` does;
  a literal repeated at least twice (``a{2}``) becomes ``<var>``; ``+`` keeps it once.

The label depends on the pattern alone, never on the request, and is computed once per
route string (a bounded cache). A route without regex syntax — every ``path()`` route —
comes out as written; one this reader cannot follow comes out raw, as before.

Django's own reader, ``django.contrib.admindocs.views.simplify_regex``, leaves escapes
(``\\.``), optional slashes and character classes outside groups in place, counts inline
flags and lookaheads as groups, drops non-capturing groups with their named groups, and
mis-pairs parentheses inside a class (``(?P<x>[)])``), so it is not used here.
"""

from __future__ import annotations

import functools
import unicodedata

# A route containing none of these has no regex syntax Django would leave in it, so it
# is a path() route (or an include prefix) and is kept exactly as written. "." is not
# among them: "robots.txt" is a common path() route, and a bare "." reads as itself.
_REGEX_SYNTAX = frozenset("^$()[]\\|")
ROUTE_CACHE_SIZE = 4096

_ZERO_WIDTH_ESCAPES = frozenset("AbBZz")
_DIGITS = frozenset("0123456789")
_HEX_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}
_FLAG_LETTERS = frozenset("aiLmsux-")

# Atoms: (kind, text, has_var). Kinds: literal character, a "." (itself unless
# repeated), a <name>, a <var>, a rendered group (text is then a list of atoms).
_LIT, _DOT, _NAME, _VAR, _SEQ = range(5)
_Atom = tuple[int, object, bool]
_VAR_ATOM: _Atom = (_VAR, "", True)
_EMPTY: _Atom = (_SEQ, (), False)


class _Unreadable(Exception):
    """The pattern has a construct this reader does not follow: keep it raw."""


def route_label(route: str) -> str:
    """Django's ``ResolverMatch.route`` as written, with a leading slash (the root
    pattern ``""`` reads ``/``, apart from unresolved requests) and without a regex
    pattern's leading ``^``."""
    return "/" + route.removeprefix("^")


@functools.lru_cache(maxsize=ROUTE_CACHE_SIZE)
def readable_route_label(route: str) -> str:
    """``route_label`` with a regex route rewritten as a template (see the module)."""
    if _REGEX_SYNTAX.isdisjoint(route):
        return "/" + route
    try:
        return "/" + _render(_Reader(route).read())
    except Exception:  # _Unreadable, or a pattern cut short: never fail the request
        return route_label(route)


class _Frame:
    """A group being read: its atoms so far, and whether it has an alternation."""

    __slots__ = ("alternation", "atoms", "has_var", "verbose")

    def __init__(self, verbose: bool) -> None:
        self.atoms: list[_Atom] = []
        self.has_var = False
        self.alternation = False
        self.verbose = verbose

    def add(self, atom: _Atom) -> None:
        self.atoms.append(atom)
        self.has_var = self.has_var or atom[2]

    def close(self) -> _Atom:
        if self.alternation:
            return _VAR_ATOM
        return (_SEQ, self.atoms, self.has_var)


class _Reader:
    """One left-to-right pass over the pattern, groups on an explicit stack (a deeply
    nested pattern cannot exhaust Python's recursion limit)."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def read(self) -> list[_Atom]:
        p = self.p
        stack = [_Frame(verbose=False)]
        while self.i < len(p):
            frame = stack[-1]
            ch = p[self.i]
            self.i += 1
            if frame.verbose and ch.isspace():
                continue
            if frame.verbose and ch == "#":
                self._skip_line()
            elif ch in "^$":
                pass
            elif ch == "\\":
                atom = self._escape()
                if atom is not None:
                    frame.add(atom)
            elif ch == ".":
                frame.add((_DOT, ".", False))
            elif ch == "[":
                frame.add(self._char_class())
            elif ch == "|":
                frame.alternation = True
            elif ch == "(":
                self._open_group(stack)
            elif ch == ")":
                if len(stack) == 1:
                    raise _Unreadable("unbalanced )")
                stack.pop()
                stack[-1].add(frame.close())
            elif ch in "?*+{" and self._quantifier(frame, ch):
                pass
            else:
                frame.add((_LIT, ch, False))
        if len(stack) != 1:
            raise _Unreadable("unclosed group")
        root = stack[0]
        return [_VAR_ATOM] if root.alternation else root.atoms

    # -- pieces -----------------------------------------------------------------------

    def _escape(self) -> _Atom | None:
        p = self.p
        ch = p[self.i]
        self.i += 1
        if ch in _ZERO_WIDTH_ESCAPES:
            return None
        if ch in _HEX_ESCAPE_DIGITS:
            digits = p[self.i : self.i + _HEX_ESCAPE_DIGITS[ch]]
            self.i += len(digits)
            return _literal(chr(int(digits, 16)))
        if ch == "N" and p.startswith("{", self.i):
            end = p.index("}", self.i)
            name = p[self.i + 1 : end]
            self.i = end + 1
            return _literal(unicodedata.lookup(name))
        if ch in _DIGITS:  # a backreference or an octal escape: no readable text
            while self.i < len(p) and p[self.i] in _DIGITS:
                self.i += 1
            return _VAR_ATOM
        if ch.isascii() and ch.isalnum():
            return _VAR_ATOM  # \d, \w, \s, \n, …
        return _literal(ch)

    def _char_class(self) -> _Atom:
        """``[...]``: one plain character (``[.]``) reads as itself, anything else as
        <var>. A ``]`` right after ``[`` or ``[^`` is a member, not the end."""
        p = self.p
        start = self.i
        negated = p.startswith("^", start)
        j = start + 1 if negated else start
        if p.startswith("]", j):
            j += 1
        while p[j] != "]":
            j += 2 if p[j] == "\\" else 1
        self.i = j + 1
        members = p[start:j]
        if len(members) == 1:
            return _literal(members)
        if len(members) == 2 and members[0] == "\\" and not members[1].isalnum():
            return _literal(members[1])
        return _VAR_ATOM

    def _open_group(self, stack: list[_Frame]) -> None:
        p = self.p
        frame = stack[-1]
        if not p.startswith("?", self.i):
            self._skip_group(frame.verbose)
            frame.add(_VAR_ATOM)  # an unnamed group
            return
        self.i += 1
        ch = p[self.i]
        if ch == "P" and p.startswith("<", self.i + 1):
            end = p.index(">", self.i)
            name = p[self.i + 2 : end]
            if not name.isidentifier():
                raise _Unreadable("group name")
            self.i = end + 1
            self._skip_group(frame.verbose)
            frame.add((_NAME, name, True))
        elif ch == "P" and p.startswith("=", self.i + 1):
            end = p.index(")", self.i)
            frame.add((_NAME, p[self.i + 2 : end], True))
            self.i = end + 1
        elif ch == "#":
            self.i = p.index(")", self.i) + 1
        elif ch in "=!" or p.startswith(("<=", "<!"), self.i):
            self._skip_group(frame.verbose)  # a lookaround: zero width, yet repeatable
            frame.add(_EMPTY)
        elif ch == "(":
            self._skip_group(frame.verbose)  # a conditional: one of two branches
            frame.add(_VAR_ATOM)
        elif ch in ":>":
            self.i += 1
            stack.append(_Frame(frame.verbose))
        else:
            self._flags(stack)

    def _flags(self, stack: list[_Frame]) -> None:
        """``(?i)`` for the whole pattern, or ``(?i:...)`` / ``(?-x:...)`` for a group;
        only verbose mode (x) changes how the rest reads."""
        p = self.p
        start = self.i
        while p[self.i] in _FLAG_LETTERS:
            self.i += 1
        flags, end = p[start : self.i], p[self.i]
        if not flags or end not in ":)":
            raise _Unreadable("group syntax")
        self.i += 1
        on, _, off = flags.partition("-")
        verbose = (stack[-1].verbose or "x" in on) and "x" not in off
        if end == ":":
            stack.append(_Frame(verbose))
        else:
            for frame in stack:
                frame.verbose = verbose

    def _quantifier(self, frame: _Frame, ch: str) -> bool:
        """Apply ``? * + {m} {m,} {m,n} {,n}`` (and a lazy ``?`` or possessive ``+``
        after it) to the previous atom; False for a ``{`` that is a literal brace."""
        if ch == "{":
            close = self.p.find("}", self.i)
            bounds = self.p[self.i : close] if close >= 0 else ""
            digits = bounds.replace(",", "", 1)
            if bounds != "," and not (digits.isascii() and digits.isdigit()):
                return False  # "{", "{}", "{a}": a literal brace, as in Python's re
            low = bounds.partition(",")[0]
            minimum = int(low) if low else 0
            self.i = close + 1
        else:
            minimum = 0 if ch in "?*" else 1
        if self.i < len(self.p) and self.p[self.i] in "?+":
            self.i += 1
        if not frame.atoms:
            raise _Unreadable("nothing to repeat")
        frame.atoms[-1] = _repeated(frame.atoms[-1], minimum)
        return True

    def _skip_group(self, verbose: bool) -> None:
        """Move past the ``)`` closing the group whose opening was just read, stepping
        over escapes, character classes, comments and nested groups."""
        p = self.p
        depth = 1
        while depth:
            ch = p[self.i]
            self.i += 1
            if ch == "\\":
                self.i += 1
            elif ch == "[":
                self._char_class()
            elif verbose and ch == "#":
                self._skip_line()
            elif ch == "(":
                if p.startswith("?#", self.i):
                    self.i = p.index(")", self.i) + 1
                else:
                    depth += 1
            elif ch == ")":
                depth -= 1

    def _skip_line(self) -> None:
        end = self.p.find("\n", self.i)
        self.i = len(self.p) if end < 0 else end + 1


def _literal(ch: str) -> _Atom:
    """A character as itself, unless it would not print (a control character)."""
    return (_LIT, ch, False) if ch.isprintable() else _VAR_ATOM


def _repeated(atom: _Atom, minimum: int) -> _Atom:
    """The atom under a quantifier, read at its minimum count: an optional literal is
    left out, a <name> or <var> stays (it names what may be there)."""
    kind, text, has_var = atom
    if kind == _SEQ and not text:
        return atom  # a lookaround: nothing to read, however often
    if kind == _DOT or has_var:
        return _VAR_ATOM if kind in (_DOT, _VAR) else atom
    if minimum == 0:
        return _EMPTY
    return atom if minimum == 1 else _VAR_ATOM


def _render(atoms: list[_Atom]) -> str:
    """The atoms as text, nested groups walked with a stack; runs of <var> merged."""
    out: list[str] = []
    stack = [iter(atoms)]
    while stack:
        atom = next(stack[-1], None)
        if atom is None:
            stack.pop()
            continue
        kind, text, _ = atom
        if kind == _SEQ:
            assert isinstance(text, (list, tuple))
            stack.append(iter(text))
        elif kind == _VAR:
            if not out or out[-1] != "<var>":
                out.append("<var>")
        elif kind == _NAME:
            out.append(f"<{text}>")
        else:
            assert isinstance(text, str)
            out.append(text)
    return "".join(out)
