"""A small LALR(1) driver over the tables lark builds from grammars/diffcli.lark.

Importing lark costs 30 to 40 ms at every start of the command, about a third
of NumPy's own import, while parsing needs only lark's tables: the lexer's
terminals and the parse table, with what each reduction hands to its callback.
tools/generate_tables.py (not part of the run-time package) asks lark for
them and writes diffcli/_tables.py, which records the CRC of the grammar it
came from: parse.py uses the tables only while they match the grammar file (a
test regenerates them and compares), and lark otherwise.

The driver does what lark's LALR parser does with a transformer: the same
shifts and reductions, children filtered and inlined as lark's parse-tree
builder does, and `?rule` expanded when it has one child. Anything it cannot
parse raises NotParsed, and lark parses it again to report the error.
"""

from __future__ import annotations

import re


class NotParsed(Exception):
    """The text is not in the language (lark says why)."""


class Token(str):
    """A terminal's text, with its type and where it stands (as lark's Token)."""

    def __new__(cls, type_: str, value: str, start_pos: int, end_pos: int):
        token = super().__new__(cls, value)
        token.type = type_
        token.start_pos = start_pos
        token.end_pos = end_pos
        return token


class _Inlined:
    """What a rule without a callback builds: children for its parent to inline."""

    __slots__ = ("children",)

    def __init__(self, children):
        self.children = children


class Parser:
    def __init__(self, tables, callbacks):
        self._scanner = re.compile(tables.PATTERN)
        self._ignore = frozenset(tables.IGNORE)
        self._states = tables.STATES
        self._start, self._end = tables.START, tables.END
        self._reductions = [(origin, size, None if size == 1 and expand1 and include is None else
                             _reduction(include, append_none, expand1, callback, callbacks))
                            for origin, size, include, append_none, expand1, callback in tables.RULES]

    def parse(self, text: str):
        states = self._states
        reductions = self._reductions
        state_stack = [self._start]
        value_stack: list = []
        for token in self._tokens(text):
            self._feed(token, states, reductions, state_stack, value_stack)
        end = Token("$END", "", len(text), len(text))
        return self._feed(end, states, reductions, state_stack, value_stack)

    def _feed(self, token, states, reductions, state_stack, value_stack):
        kind = token.type
        while True:
            action = states[state_stack[-1]].get(kind)
            if action is None:
                raise NotParsed
            if action >= 0:  # shift
                state_stack.append(action)
                value_stack.append(token)
                return None
            origin, size, reduce = reductions[-1 - action]
            if reduce is None:  # a ?rule with one child hands it up unchanged (most reductions)
                state_stack.pop()
                state_stack.append(states[state_stack[-1]][origin])
            else:
                if size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    children = []
                value = reduce(children)
                state_stack.append(states[state_stack[-1]][origin])
                value_stack.append(value)
            if kind == "$END" and state_stack[-1] == self._end:
                return value_stack[-1]

    def _tokens(self, text: str):
        match, ignore = self._scanner.match, self._ignore
        pos, end, depth = 0, len(text), 0
        while pos < end:
            m = match(text, pos)
            if m is None:
                raise NotParsed
            kind = m.lastgroup
            start, pos = pos, m.end()
            if kind in ignore:
                continue
            if kind in ("LPAR", "LSQB"):
                depth += 1
            elif kind in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif kind == "_NEWLINE" and depth:
                continue  # inside brackets a newline is only whitespace (parse.py's postlexer for lark)
            yield Token(kind, m.group(), start, pos)


def _reduction(include, append_none, expand1, callback, callbacks):
    """The function a reduction calls with the popped values, as lark's
    ChildFilterLALR / ExpandSingleChild wrappers around the callback would."""
    kind, name = callback
    build = getattr(callbacks, name) if kind == "method" else _Inlined
    if expand1:
        inner = build

        def build(children, inner=inner):
            return children[0] if len(children) == 1 else inner(children)
    if include is None:
        return build

    def filtered(children):
        kept: list = []
        for i, inline, nones in include:
            if nones:
                kept += [None] * nones
            if inline and not kept:
                # An inlined rule's list is read once, here: extended in place, so that a
                # long `(COMMA expr)*` grows in linear time, not by copying at each item.
                kept = children[i].children
            elif inline:
                kept += children[i].children
            else:
                kept.append(children[i])
        if append_none:
            kept += [None] * append_none
        return build(kept)
    return filtered


def grammar_crc(grammar: bytes) -> int:
    """The CRC the tables record, of the grammar with line endings made \\n (so a
    checkout that turned them into \\r\\n still uses the tables)."""
    import zlib

    return zlib.crc32(grammar.replace(b"\r\n", b"\n"))
