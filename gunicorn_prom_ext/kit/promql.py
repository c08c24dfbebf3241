"""Renaming metrics inside PromQL text, exactly.

A metric name is renamed only where PromQL reads it as one: a bare selector name
(``gunicorn_workers{job="x"}``), or the value of an ``__name__="…"`` / ``__name__!="…"``
matcher. Label names (in ``{…}``, ``by (…)``, ``without (…)``, ``on (…)``,
``ignoring (…)``, ``group_left (…)``, ``group_right (…)``, and the label argument of
Grafana's ``label_values``), string literals, durations, Grafana variables
(``$job``, ``${job}``, ``$__rate_interval``), comments, function names and any longer name
that merely contains a known one are left exactly as they were. The text between tokens
(spacing, line breaks) is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])
    | (?P<number>\.?[0-9][0-9a-zA-Z_.]*)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=!,(){}\[\]@])
    """,
    re.VERBOSE | re.DOTALL,
)

# Keywords whose parenthesised list holds label names.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


class PromQLSyntaxError(ValueError):
    """Text the renamer cannot tokenise (an unterminated string, a stray character)."""


@dataclass
class _Token:
    kind: str
    text: str


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise PromQLSyntaxError(
                f"cannot read PromQL at offset {position}: {text[position : position + 20]!r}"
            )
        tokens.append(_Token(match.lastgroup, match.group()))
        position = match.end()
    return tokens


def rename_metrics(expr: str, names: Mapping[str, str]) -> str:
    """``expr`` with every metric name found in ``names`` replaced by its value."""
    tokens = tokenize(expr)
    code = [token for token in tokens if token.kind not in ("space", "comment")]
    # Each open bracket: what its contents are. "labels": a list of label names;
    # "selector": label matchers; "range": a duration; "label_values": Grafana's function,
    # whose argument after the comma (or sole bare argument) is a label name; "group":
    # anything else.
    stack: list[str] = []
    # Per open label_values: its top-level names (None marks a comma), to undo afterwards.
    label_values_args: list[list[_Token | None]] = []
    renamed: dict[int, str] = {}  # id(token) -> its text before renaming
    after_name_label = False  # the previous token was `__name__` inside a selector
    name_matcher = False  # the previous tokens were `__name__` and `=` or `!=`
    for position, token in enumerate(code):
        context = stack[-1] if stack else ""
        previous = code[position - 1] if position else None
        following = code[position + 1] if position + 1 < len(code) else None
        was_name_label, was_name_matcher = after_name_label, name_matcher
        after_name_label = name_matcher = False
        if context == "range" and token.text != "]":
            continue
        if token.text in ("(", "{", "["):
            stack.append(_context_of(token.text, previous))
            if stack[-1] == "label_values":
                label_values_args.append([])
        elif token.text in (")", "}", "]"):
            if not stack:
                raise PromQLSyntaxError(f"unbalanced {token.text!r} in {expr!r}")
            if stack.pop() == "label_values":
                _undo_label_renames(label_values_args.pop(), renamed)
        elif token.kind == "op":
            if token.text == "," and context == "label_values":
                label_values_args[-1].append(None)
            name_matcher = was_name_label and token.text in ("=", "!=")
        elif token.kind == "string":
            if was_name_matcher and context == "selector":
                token.text = _rename_in_string(token.text, names)
        elif token.kind == "ident":
            if context == "selector":
                after_name_label = token.text == "__name__"
            elif context != "labels" and not (following and following.text == "("):
                # Not a label name and not a function or keyword: a metric name.
                if context == "label_values":
                    label_values_args[-1].append(token)
                if token.text in names:
                    renamed[id(token)] = token.text
                    token.text = names[token.text]
    if stack:
        raise PromQLSyntaxError(f"unclosed {stack[-1]!r} bracket in {expr!r}")
    return "".join(token.text for token in tokens)


def _context_of(bracket: str, previous: _Token | None) -> str:
    if bracket == "{":
        return "selector"
    if bracket == "[":
        return "range"
    if previous is not None and previous.kind == "ident":
        if previous.text.lower() in _LABEL_LIST_KEYWORDS:
            return "labels"
        if previous.text == "label_values":
            return "label_values"
    return "group"


def _undo_label_renames(arguments: list[_Token | None], renamed: dict[int, str]) -> None:
    """label_values(query, label) and label_values(label): the label is no metric."""
    if None in arguments:
        labels = arguments[arguments.index(None) + 1 :]
    else:
        labels = arguments if len(arguments) == 1 else []
    for token in labels:
        if token is not None and id(token) in renamed:
            token.text = renamed[id(token)]


def _rename_in_string(literal: str, names: Mapping[str, str]) -> str:
    quote, body = literal[0], literal[1:-1]
    if body in names and "\\" not in body:
        return f"{quote}{names[body]}{quote}"
    return literal
