"""Text -> syntax -> graph.

The LALR parse runs on the tables lark builds from grammars/diffcli.lark
(shipped in _tables.py and driven by lalr.py, so a start needs no lark); the
callbacks run at each reduction and make small Syntax records (no parse tree,
no recursive transformer). Text the driver cannot parse goes to lark itself,
whose error is explained. `Program.build` then walks the syntax with an explicit
stack and makes graph nodes for a given set of variable shapes. Parse errors are
rewritten into one sentence plus a caret under the offending column.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache

import numpy as np

from ..errors import ExpressionError, ShapeError
from . import synonyms
from .arrays import fancy_index
from .functions import CONSTANTS, FUNCTIONS, arity_text, positional_slots, read_option
from ..graph.nodes import Graph, Node
from .lalr import JUXTAPOSED, NotParsed, Parser
from ..graph.ops import describe, operator

# (os.path, not pathlib: pathlib's import is 6 ms of every start)
_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # diffcli/
# Installed wheels carry the grammar inside the package; a source checkout has it
# at the top level.
GRAMMAR_CANDIDATES = (os.path.join(_PACKAGE, "grammars", "diffcli.lark"),
                      os.path.join(os.path.dirname(_PACKAGE), "grammars", "diffcli.lark"))

OPENERS, CLOSERS = "([", ")]"


# Limits that keep adversarial input within seconds and bounded memory.
MAX_EXPRESSION_CHARS = 2_000_000
MAX_DEPTH = 200_000


class Syntax:
    """One construct of the source: kind, children (Syntax or None), data, span,
    and its nesting depth (computed as the parser reduces, without recursion)."""

    __slots__ = ("children", "data", "depth", "kind", "span")

    def __init__(self, kind, children, data, span):
        self.kind = kind
        self.children = children
        self.data = data
        self.span = span
        self.depth = 1 + max((c.depth for c in children if c is not None), default=0)


def _span(token):
    return (token.start_pos, token.end_pos)


class _Callbacks:
    """Called by the LALR parser at each reduction; keeps no state between calls.
    Tokens are the only str among the children (lark's or diffcli.lalr's)."""

    def number(self, children):
        (tok,) = children
        return Syntax("number", (), float(tok), _span(tok))

    def name(self, children):
        (tok,) = children
        return Syntax("name", (), str(tok), _span(tok))

    def call(self, children):
        name = children[0]
        args = children[2] if len(children) == 4 else []
        return Syntax("call", tuple(args), str(name), _span(name))

    def string(self, children):
        (tok,) = children
        return Syntax("string", (), str(tok)[1:-1], _span(tok))

    def group(self, children):
        return children[1]

    def tuple(self, children):
        first, rest = children[1], children[3]
        return Syntax("tuple", (first, *(rest or ())), None, _span(children[0]))

    def keyword(self, children):
        name, _, value = children
        return Syntax("keyword", (value,), str(name), _span(name))

    def array(self, children):
        return Syntax("array", tuple(children[1]), None, _span(children[0]))

    def arguments(self, children):
        return [c for c in children if not isinstance(c, str)]

    items = arguments
    subscripts = arguments

    def index(self, children):
        target, bracket, subscripts, _ = children
        return Syntax("index", (target, *subscripts), None, _span(bracket))

    def slice(self, children):
        parts = [c for c in children if not (isinstance(c, str) and c.type == "COLON")]
        colon = next(c for c in children if isinstance(c, str))
        while len(parts) < 3:
            parts.append(None)
        return Syntax("slice", tuple(parts), None, _span(colon))

    def binary(self, children):
        a, op, b = children
        return Syntax("apply", (a, b), operator(str(op) or "*"), _span(op))  # "": juxtaposed, x y

    def compare(self, children):
        a, op, b = children
        return Syntax("apply", (a, b), operator(str(op)), _span(op))

    def unary(self, children):
        op, a = children
        return a if op == "+" else Syntax("apply", (a,), "neg", _span(op))

    def implicit_mul(self, children):
        number, operand = children
        if operand.kind == "call":  # 2x(x+1): a product if x is not a function (decided when built)
            operand = Syntax("juxtaposed_call", operand.children, operand.data, operand.span)
        return Syntax("apply", (self.number([number]), operand), "mul", _span(number))

    def let(self, children):
        name, _, value = children
        return Syntax("let", (value,), str(name), _span(name))

    def start(self, children):
        statements = [c for c in children if isinstance(c, Syntax)]
        return Syntax("program", tuple(statements), None, (0, 0))


class _NewlinesInBrackets:
    """Inside ( ) and [ ] a newline is only whitespace, as in Python; and an
    implicit '*' between tokens that side by side mean a product (lalr.JUXTAPOSED)."""

    always_accept = ("_NEWLINE",)

    def process(self, stream):
        from lark import Token

        depth, previous = 0, None
        for token in stream:
            if token.type in ("LPAR", "LSQB"):
                depth += 1
            elif token.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif token.type == "_NEWLINE" and depth:
                continue
            if (previous, token.type) in JUXTAPOSED:
                yield Token("STAR", "", start_pos=token.start_pos, line=token.line, column=token.column,
                            end_line=token.line, end_column=token.column, end_pos=token.start_pos)
            previous = token.type
            yield token


def grammar_path() -> str:
    for path in GRAMMAR_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError("diffcli's grammar file is missing from the installation")


@lru_cache(maxsize=1)
def _parser() -> Parser | None:
    """The LALR driver over the shipped tables, or None if they are not those of
    the grammar file (then lark parses)."""
    from . import _tables
    from .lalr import grammar_crc

    with open(grammar_path(), "rb") as f:
        text = f.read()
    if grammar_crc(text) != _tables.GRAMMAR_CRC:
        return None
    return Parser(_tables, _Callbacks())


@lru_cache(maxsize=1)
def lark_parser():
    """lark's own parser for the grammar file: for error messages, when the
    shipped tables are out of date, and to generate them."""
    lark = _import_lark()
    callbacks = type("_LarkCallbacks", (_Callbacks, lark.Transformer), {})
    with open(grammar_path(), encoding="utf-8") as f:
        grammar = f.read()
    return lark.Lark(grammar, parser="lalr", lexer="basic",
                     transformer=callbacks(), postlex=_NewlinesInBrackets(), maybe_placeholders=True,
                     cache=True)


def _import_lark():
    """lark imports the PyPI `regex` module whenever it is installed, though
    diffcli never asks for it (the grammar is ASCII): 14 ms more where it is.
    Hidden from lark's import only, then left as it was."""
    hidden = "regex" not in sys.modules
    if hidden:
        sys.modules["regex"] = None  # type: ignore[assignment]  # makes `import regex` raise ImportError
    try:
        import lark
        import lark.exceptions  # noqa: F401
    finally:
        if hidden:
            del sys.modules["regex"]
    return lark


# ---------------------------------------------------------------- parsing


class Program:
    """A parsed expression: let-bindings and a result, not yet bound to shapes."""

    def __init__(self, source: str, root: Syntax):
        self.source = source
        self.root = root
        self.variables = _free_variables(root)

    def build(self, graph: Graph, shapes: dict[str, tuple]) -> Node:
        """Graph nodes for the result, with variables of the given shapes."""
        env: dict[str, Node] = {}
        try:
            for statement in self.root.children:
                if statement.kind == "let":
                    _check_bindable(statement)
                    env[statement.data] = _build(graph, statement.children[0], env, shapes)
                else:
                    node = _build(graph, statement, env, shapes)
            return node
        except (ExpressionError, ShapeError) as e:
            raise e.with_source(self.source) from None


def parse(text: str) -> Program:
    """Parse an expression; raises ExpressionError with a caret-ready span."""
    if "\x00" in text:
        raise ExpressionError("the expression contains a NUL byte", _at(text.index("\x00")), text)
    if not text.strip():
        raise ExpressionError("empty expression: nothing to evaluate", None, text)
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is {len(text):,} characters long; diffcli reads at most "
                              f"{MAX_EXPRESSION_CHARS:,}", None, text)
    _check_brackets(text)
    root = _parse_with_tables(text)
    if root is None:
        lark = _import_lark()
        try:
            root = lark_parser().parse(text)
        except lark.exceptions.UnexpectedInput as e:
            raise _explain(e, text) from None
    deepest = max(s.depth for s in root.children)
    if deepest > MAX_DEPTH:
        raise ExpressionError(f"the expression nests {deepest:,} levels deep; diffcli handles at most "
                              f"{MAX_DEPTH:,}", None, text)
    try:
        _check_calls(root)
    except ExpressionError as e:
        raise e.with_source(text) from None
    return Program(text, root)


def _parse_with_tables(text: str) -> Syntax | None:
    """The program's syntax, or None if the driver cannot parse it (lark then
    parses it again, and explains what is wrong)."""
    parser = _parser()
    if parser is None:
        return None
    try:
        return parser.parse(text)
    except NotParsed:
        return None


def _at(pos):
    return (pos, pos + 1)


_BRACKETS_AND_COMMENTS = re.compile(r"[()\[\]]|#[^\n]*|'[^'\n]*'|\"[^\"\n]*\"")


def _check_brackets(text: str) -> None:
    """Unbalanced brackets, found before parsing so the message can point at the
    opener that is never closed. Only brackets and comments are visited."""
    stack: list[int] = []
    for match in _BRACKETS_AND_COMMENTS.finditer(text):
        ch, pos = match.group()[0], match.start()
        if ch in "#'\"":  # brackets in a comment or a string are not brackets
            continue
        if ch in OPENERS:
            stack.append(pos)
            if len(stack) > MAX_DEPTH:
                raise ExpressionError(f"brackets nest more than {MAX_DEPTH:,} levels deep; diffcli "
                                      f"handles at most {MAX_DEPTH:,}", _at(pos), text)
        elif ch in CLOSERS:
            if not stack:
                raise ExpressionError(f"unmatched '{ch}'", _at(pos), text)
            opener = stack.pop()
            if OPENERS.index(text[opener]) != CLOSERS.index(ch):
                raise ExpressionError(f"'{ch}' does not match the '{text[opener]}' opened at column "
                                      f"{opener + 1}", _at(pos), text)
    if stack:
        pos = stack[-1]
        raise ExpressionError(f"'{text[pos]}' is never closed", _at(pos), text)


_LOOKALIKES = {"×": "*", "·": "*", "∗": "*", "÷": "/", "−": "-", "–": "-", "—": "-", "‐": "-",
               "²": "**2", "³": "**3", "√": "sqrt", "π": "pi", "^": "^", "≤": "<=", "≥": ">=",
               "≠": "!=", "“": "(", "”": ")"}
_OPERATOR_ENDINGS = ("**", "+", "-", "*", "/", "@", "^", "<", ">", "=", ",", ":", "(", "[", ";")


def _explain(error, text: str) -> ExpressionError:
    """A lark UnexpectedInput as one sentence with a caret span."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(error, UnexpectedCharacters):
        pos = error.pos_in_stream
        ch = text[pos]
        if ch == ".":
            dotted = _dotted_name_at(text, pos)
            if dotted is not None:
                return dotted
        return ExpressionError(_describe_bad_character(ch), _at(pos), text)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    at_end = token.type == "$END"
    pos = len(text.rstrip()) if at_end else token.start_pos
    before = text[:pos].rstrip()
    operator = next((op for op in _OPERATOR_ENDINGS if before.endswith(op)), None)
    shown = "the end of the expression" if at_end else f"'{token}'"
    if at_end and before.endswith("="):
        span = _at(len(before) - 1)
        return ExpressionError("expected a value after '='", span, text)
    if operator in ("(", "[", ",", ":", ";"):
        return ExpressionError(f"expected an operand after '{operator}', found {shown}",
                               _at(len(before) - 1) if at_end else _tok_span(token), text)
    if operator is not None:
        span = _at(len(before) - 1) if at_end else _tok_span(token)
        return ExpressionError(f"expected an operand after '{operator}', found {shown}", span, text)
    if at_end and "SEMI" in error.expected:
        return ExpressionError("a let-binding needs a result after it, as in 'r = x^2; r + 1'",
                               _at(max(0, len(before) - 1)), text)
    if at_end:
        return ExpressionError("the expression ends too early", _at(max(0, len(before) - 1)), text)
    if token.type in ("NAME", "NUMBER", "LPAR", "LSQB"):
        return ExpressionError(f"missing operator before '{token}': write '*' to multiply, as in "
                               f"{before.split()[-1][-12:]}*{token}", _tok_span(token), text)
    if token.type == "ASSIGN":
        return ExpressionError("'=' binds a name (name = value; result); use '==' to compare",
                               _tok_span(token), text)
    if token.type == "COMPARE":
        return ExpressionError("comparisons do not chain: write (a < b) * (b < c)", _tok_span(token),
                               text)
    return ExpressionError(f"unexpected '{token}'", _tok_span(token), text)


def _dotted_name_at(text: str, pos: int) -> ExpressionError | None:
    """np.sin, math.exp, torch.exp: another tool's name, with the bare name to write."""
    for match in synonyms.DOTTED_NAME.finditer(text, max(0, pos - 100), pos + 100):
        if match.start() < pos < match.end():
            dotted = match.group()
            found = synonyms.for_dotted(dotted)
            if not found:
                return None
            return ExpressionError(f"'{dotted}': diffcli's names take no module prefix{synonyms.hint(found)}",
                                   match.span(), text)
    return None


def _tok_span(token):
    return (token.start_pos, max(token.end_pos, token.start_pos + 1))


def _describe_bad_character(ch: str) -> str:
    import unicodedata  # only an error needs it

    code = f"U+{ord(ch):04X}"
    ascii_form = _LOOKALIKES.get(ch) or unicodedata.normalize("NFKC", ch)
    if ascii_form != ch and ascii_form.isascii() and ascii_form.isprintable():
        name = unicodedata.name(ch, code)
        return f"'{ch}' ({name}) is not ASCII: write '{ascii_form}' instead"
    if not ch.isprintable() or ch in "\t\r\f\v":
        return f"control character {code} is not allowed in an expression"
    return f"unexpected character '{ch}' ({code})"


# ---------------------------------------------------------------- syntax -> graph


def _walk(root: Syntax):
    """Syntax nodes in post-order, without recursion."""
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            yield node
            continue
        stack.append((node, True))
        for child in reversed(node.children):
            if child is not None:
                stack.append((child, False))


def _check_calls(root: Syntax) -> None:
    """Each call names a function and gives it arguments it takes: operands, then
    the keyword arguments it has (or trailing positional ones standing for them),
    each once and a constant; tuples only as such values. Checked before any shape
    is known, with a caret at what is wrong."""
    allowed: set[int] = set()  # the tuples that are keyword values
    tuples = []
    for statement in root.children:
        for node in _walk(statement):
            if node.kind == "call":
                allowed.update(_check_call(node))
            elif node.kind == "tuple":
                tuples.append(node)
    for node in reversed(tuples):  # (post-order: an outer tuple after its inner ones)
        if id(node) in allowed:
            allowed.update(id(c) for c in node.children if c.kind == "tuple")  # ((1, 2), (0, 1))
    for node in tuples:
        if id(node) not in allowed:
            raise ExpressionError("a tuple (a, b) is only a keyword argument's value, as in sum(A, axis=(0, 1))",
                                  node.span)


def _check_call(call: Syntax) -> list[int]:
    """Checks one call (see _check_calls); the ids of the tuples among its keyword values."""
    name = call.data
    spec = FUNCTIONS.get(name)
    if spec is None:
        if len(call.children) == 1 and not synonyms.suggestions(name):
            return []  # perhaps a product written without '*' (2x(x+1)): the build decides
        raise _unknown_function(call, len(call.children))
    positional = [c for c in call.children if c.kind != "keyword"]
    first_keyword = _first_keyword(call)
    after_keyword = next((c for c in call.children[first_keyword:] if c.kind != "keyword"), None)
    if after_keyword is not None:
        raise ExpressionError(f"{name}: a positional argument follows a keyword argument", after_keyword.span)
    slots = positional_slots(spec)
    if not spec.min_args <= len(positional) <= spec.max_args + len(slots):
        raise ExpressionError(f"{name} takes {arity_text(spec)} ({len(positional)} given)", call.span)
    given = {p.name for p in slots[:max(0, len(positional) - spec.max_args)]}
    values = positional[spec.max_args:]
    known = {p.name for p in spec.keywords}
    for keyword in (c for c in call.children if c.kind == "keyword"):
        if keyword.data not in known:
            takes = f"it takes {', '.join(p.name for p in spec.keywords)}" if known else "it takes none"
            raise ExpressionError(f"{name} has no keyword argument '{keyword.data}' ({takes})", keyword.span)
        if keyword.data in given:
            raise ExpressionError(f"{name}: {keyword.data} is given twice", keyword.span)
        given.add(keyword.data)
        values.append(keyword.children[0])
    for value in values:
        _check_constant(name, value)
    _defaults_for_none(call)
    return [id(v) for v in values if v.kind == "tuple"]


def _defaults_for_none(call: Syntax) -> None:
    """A keyword argument given as None is left at its default (sum(x, axis=None))."""
    def default(value):
        return Syntax("default", (), None, value.span) if value.kind == "name" and value.data == "None" else value

    for keyword in call.children:
        if keyword.kind == "keyword":
            keyword.children = (default(keyword.children[0]),)
    call.children = tuple(c if c.kind == "keyword" or i < FUNCTIONS[call.data].max_args else default(c)
                          for i, c in enumerate(call.children))


def _first_keyword(call: Syntax) -> int:
    return next((i for i, c in enumerate(call.children) if c.kind == "keyword"), len(call.children))


def _check_constant(function: str, value: Syntax) -> None:
    """A keyword argument's value names no variable (None alone stands for the default)."""
    for node in _walk(value):
        if node.kind == "name" and node.data not in CONSTANTS and not (node is value and node.data == "None"):
            raise ExpressionError(f"{function}: keyword arguments are constants, and '{node.data}' is not one",
                                  node.span)
        if node.kind == "call":
            raise ExpressionError(f"{function}: keyword arguments are constants (numbers, True, False, None, "
                                  f"tuples of integers)", node.span)


def _unknown_function(call: Syntax, arguments: int) -> ExpressionError:
    """What other tools call it (synonyms.py), by meaning, then by spelling."""
    found = synonyms.suggestions(call.data)
    hint = synonyms.hint(found)
    if not found and arguments == 1:
        hint = f": to multiply, write {call.data}*(...)"
    return ExpressionError(f"unknown function '{call.data}'{hint}", call.span)


def _free_variables(root: Syntax) -> tuple[str, ...]:
    bound: set[str] = set()
    found: dict[str, None] = {}
    for statement in root.children:
        expr = statement.children[0] if statement.kind == "let" else statement
        for node in _walk(expr):
            if node.kind == "name" and node.data not in bound and node.data not in CONSTANTS \
                    and node.data not in FUNCTIONS:
                found.setdefault(node.data)
            elif node.kind == "juxtaposed_call" and node.data not in bound and node.data not in CONSTANTS \
                    and _multiplies(node, bound):
                found.setdefault(node.data)
        if statement.kind == "let":
            bound.add(statement.data)
    return tuple(found)


def _check_bindable(let: Syntax) -> None:
    if let.data in FUNCTIONS:
        raise ExpressionError(f"'{let.data}' is a function and cannot be bound to a value", let.span)
    if let.data in CONSTANTS:
        raise ExpressionError(f"'{let.data}' is a built-in constant and cannot be rebound", let.span)


def _build(graph: Graph, root: Syntax, env: dict[str, Node], shapes: dict[str, tuple]) -> Node:
    built: dict[int, Node | None] = {}
    sequences: set[int] = set()  # array literals that are a list of arrays (concatenate([a, b]))
    stack = [(root, False)]
    while stack:  # post-order, as _walk, marking such lists on the way down
        syn, expanded = stack.pop()
        if not expanded:
            stack.append((syn, True))
            if syn.kind == "call" and syn.children and syn.children[0].kind == "array" \
                    and _takes_sequence(syn.data):
                sequences.add(id(syn.children[0]))
            stack.extend((c, False) for c in reversed(syn.children) if c is not None)
            continue
        args = [None if c is None else built.pop(id(c)) for c in syn.children]
        if id(syn) in sequences:
            built[id(syn)] = tuple(args)
            continue
        if syn.kind not in ("call", "slice"):
            _check_values(syn, args)
        built[id(syn)] = _build_one(graph, syn, args, env, shapes)
    node = built.pop(id(root))
    _check_values(root, [node])
    return node


def _takes_sequence(name: str) -> bool:
    spec = FUNCTIONS.get(name)
    return spec is not None and getattr(spec.build, "takes_sequence", False)


def _check_values(syn: Syntax, args) -> None:
    """Quoted text and lists of arrays are arguments of particular functions only."""
    for arg in args:
        if isinstance(arg, str):
            raise ExpressionError("quoted text is only einsum's subscripts, as in einsum('ij,jk->ik', A, B)",
                                  syn.span)


def _build_one(graph, syn, args, env, shapes):
    kind = syn.kind
    if kind == "number":
        return graph.const(syn.data)
    if kind == "string":
        return syn.data
    if kind == "name":
        return _resolve_name(graph, syn, env, shapes)
    if kind == "apply":
        return graph.apply(syn.data, args, span=syn.span)
    if kind == "call":
        return _call(graph, syn, args)
    if kind == "juxtaposed_call":
        if _multiplies(syn, env):
            factor = _resolve_name(graph, Syntax("name", (), syn.data, syn.span), env, shapes)
            return graph.apply("mul", (factor, args[0]), span=syn.span)
        return _call(graph, syn, args)
    if kind == "array":
        return graph.apply("stack", args, span=syn.span)
    if kind == "slice":
        return tuple(args)
    if kind == "tuple":
        return Tuple(args)
    if kind == "default":
        return None
    if kind == "keyword":
        return Keyword(syn.data, args[0], syn.span)
    if kind == "index":
        return _index(graph, syn, args[0], args[1:])
    raise AssertionError(kind)


class Tuple(tuple):
    """A built tuple (a, b): the value of a keyword argument."""


class Keyword:
    __slots__ = ("name", "span", "value")

    def __init__(self, name, value, span):
        self.name, self.value, self.span = name, value, span


def _resolve_name(graph, syn, env, shapes):
    name = syn.data
    if name in env:
        return env[name]
    if name in CONSTANTS:
        return graph.const(CONSTANTS[name])
    if name in FUNCTIONS:
        raise ExpressionError(f"'{name}' is a function: call it as {name}(...)", syn.span)
    if name not in shapes:  # the API checks for missing values first; this is a safety net
        raise ExpressionError(f"no value for variable '{name}'", syn.span)
    return graph.var(name, shapes[name], syn.span)


def _multiplies(syn: Syntax, bound) -> bool:
    """Whether name(...) after a number (2x(x+1)) multiplies: a value's name
    with one bracket, never a function's or what looks like one (2ln(x))."""
    name = syn.data
    if name in FUNCTIONS or len(syn.children) != 1:
        return False
    return name in bound or name in CONSTANTS or not synonyms.suggestions(name)


def _call(graph, syn, args):
    """The call's node; parse() has checked its arguments against the function's."""
    name = syn.data
    spec = FUNCTIONS.get(name)
    if spec is None:  # left by parse() for the build to decide: 2x(x+1) multiplies, x(x+1) is refused
        raise _unknown_function(syn, len(args))
    operands = [a for a in args if type(a) is not Keyword]
    spans = [c.span for c in syn.children if c.kind != "keyword"]
    given = [(param, value, span) for param, value, span in
             zip(positional_slots(spec), operands[spec.max_args:], spans[spec.max_args:])]
    by_name = {p.name: p for p in spec.keywords}
    given += [(by_name[k.name], k.value, k.span) for k in args if type(k) is Keyword]
    options = {param.name: read_option(param, value, span, name) for param, value, span in given
               if value is not None}
    return spec.build(graph, operands[:spec.max_args], syn.span, options)


def _index(graph, syn, target: Node, subscripts) -> Node:
    shape = target.shape
    if len(subscripts) > len(shape):
        raise ShapeError(f"too many indices: {len(subscripts)} for {describe(shape)}", syn.span)
    if any(type(sub) is Node and sub.op == "const" and sub.shape for sub in subscripts):
        return _fancy_index(graph, syn, target, subscripts)
    items = []
    for axis, sub in enumerate(subscripts):
        n = shape[axis]
        if isinstance(sub, tuple):
            bounds = tuple(None if part is None else _constant_int(part, syn) for part in sub)
            if bounds[2] == 0:
                raise ShapeError("slice step cannot be zero", syn.span)
            items.append(bounds)
        else:
            i = _constant_int(sub, syn)
            if not -n <= i < n:
                raise ShapeError(f"index {i} is out of range for axis {axis} of size {n}", syn.span)
            items.append(i % n)
    return graph.apply("index", (target,), tuple(items), span=syn.span)


def _fancy_index(graph, syn, target: Node, subscripts) -> Node:
    """Indexing with arrays of integers (constants): NumPy's rules, by arrays.py."""
    key = []
    for sub in subscripts:
        if isinstance(sub, tuple):
            key.append(slice(*(None if part is None else _constant_int(part, syn) for part in sub)))
        elif sub.op == "const" and sub.shape:
            value = np.asarray(sub.value)
            if not np.all(np.isfinite(value)) or np.any(value != np.round(value)):
                raise ExpressionError("index arrays must hold integers", syn.span)
            key.append(value.astype(np.int64))
        else:
            key.append(_constant_int(sub, syn))
    return fancy_index(graph, target, tuple(key), syn.span)


def _constant_int(node: Node, syn: Syntax) -> int:
    if node.op != "const" or node.shape != ():
        raise ExpressionError("an index must be a constant integer", syn.span)
    value = float(node.value)
    if not np.isfinite(value) or value != int(value):
        raise ExpressionError(f"an index must be an integer, not {value:g}", syn.span)
    return int(value)
