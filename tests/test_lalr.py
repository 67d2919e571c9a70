"""The LALR driver over shipped tables parses exactly as lark does, and start-up
never imports lark."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest

from diffcli.language import _tables, lalr, parse

from .test_property import random_scalar

REPO = Path(__file__).resolve().parent.parent


def _generator():
    """tools/generate_tables.py, which is not part of the package."""
    spec = importlib.util.spec_from_file_location("generate_tables", REPO / "tools" / "generate_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

SYNTAX = [
    "x", "2x", "2x^2", "3(x+1)", "2pi", "-x**2", "2**-x", "+x", "--x", "x @ A", "a < b", "x >= 1",
    "f()", "sum(x, )", "max(x, y, z)", "[1, 2, 3,]", "[[1, 2], [3, 4]]", "x[0]", "x[1:]", "x[:-1]", "x[:]",
    "x[::2]", "x[1::]", "x[:2:]", "x[1:5:2]", "x[::]", "x[0, 1:]", "A[1][2]", "r = x^2; r + 1",
    "a = 1\nb = a + 1\n\na * b\n", "sum([x,\n y,\n z])", "(x\n+ 1)", "x # a comment\n", "# c\n;x;;",
    "1.5e-3 * .5 + 2. + 1E+2", "x_1 + _y", "sin(x)^2 + cos(x)^2", "((((x))))",
    "1 - 2 - 3", "2 / 3 / 4", "2 ** 3 ** 2", "2 ^ 3 ^ 2", "-2 ^ 2", "a == b", "x != 0",
]
BAD = ["x +", "(x", "x)", "2 3", "x = ", "a < b < c", "x ++", "[1, 2", "f(,)", "x $ y", "x = 1;", "1..2",
       "x[1:2:3:4]", "", "×", "2(x)(y)"]


def _shape(node):
    """A Syntax tree as a flat post-order list of (kind, data, span, child
    positions), built and compared without recursion (deep inputs too)."""
    flat, position = [], {}
    stack = [(node, False)]
    while stack:
        current, done = stack.pop()
        if current is None:
            continue
        if done:
            position[id(current)] = len(flat)
            flat.append((current.kind, current.data, current.span,
                         tuple(None if c is None else position[id(c)] for c in current.children)))
            continue
        stack.append((current, True))
        stack.extend((c, False) for c in reversed(current.children))
    return flat


def _both(text):
    ours = parse._parser().parse(text)
    theirs = parse.lark_parser().parse(text)
    return _shape(ours), _shape(theirs)


def test_the_shipped_tables_are_those_of_the_grammar_file():
    assert parse._parser() is not None, (
        "grammars/diffcli.lark changed: regenerate the tables with "
        "python tools/generate_tables.py")


def test_the_shipped_tables_are_exactly_what_the_generator_writes_now():
    """Regenerated from the grammar with the installed lark, byte for byte: the
    tables cannot drift from the grammar or from the generator."""
    shipped = (REPO / "diffcli" / "language" / "_tables.py").read_text(encoding="utf-8")
    assert _generator().generated() == shipped, "regenerate them: python tools/generate_tables.py"


def test_the_generator_numbers_states_the_same_whatever_the_hash_seed(tmp_path):
    """lark numbers its LALR states as its sets happen to iterate, and names rules
    with Tokens or strs depending on whether it built its table or loaded it from
    its cache; the generator writes the same file either way: two processes with
    other hash seeds building afresh (an empty temporary directory for lark's
    cache each), and a third loading what the second cached."""
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tools']\n"
              "import generate_tables\n"
              "sys.stdout.write(generate_tables.generated())\n")
    shipped = (REPO / "diffcli" / "language" / "_tables.py").read_text(encoding="utf-8")
    for seed, run in [("1", "fresh"), ("2", "fresh"), ("2", "cached")]:
        (tmp_path / seed).mkdir(exist_ok=True)
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": seed, "TMPDIR": str(tmp_path / seed)}
        out = subprocess.run([sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, env=env,
                             check=True)
        assert out.stdout == shipped, (seed, run)
    assert any(p.name.startswith(".lark_cache") for p in (tmp_path / "2").iterdir())


@pytest.mark.parametrize("text", SYNTAX)
def test_the_driver_builds_what_lark_builds(text):
    ours, theirs = _both(text)
    assert ours == theirs


def test_random_expressions_parse_alike():
    for seed in range(300):
        text = random_scalar(random.Random(seed), 5)
        ours, theirs = _both(text)
        assert ours == theirs, text


def test_deep_nesting_parses_alike_without_recursion():
    text = "(" * 3000 + "x" + "+1)" * 3000
    ours, theirs = _both(text)
    assert ours == theirs


@pytest.mark.parametrize("text", BAD)
def test_what_the_driver_cannot_parse_lark_cannot_either(text):
    with pytest.raises(lalr.NotParsed):
        parse._parser().parse(text)
    lark = parse._import_lark()
    with pytest.raises(lark.exceptions.UnexpectedInput):
        parse.lark_parser().parse(text)


def test_tables_generated_now_from_the_installed_lark_parse_alike():
    fresh = _generator().tables_from_lark(parse.lark_parser())
    driver = lalr.Parser(types.SimpleNamespace(**fresh), parse._Callbacks())
    for text in SYNTAX:
        assert _shape(driver.parse(text)) == _shape(parse.lark_parser().parse(text)), text
    assert fresh["PATTERN"] == _tables.PATTERN and fresh["IGNORE"] == _tables.IGNORE


def test_with_stale_tables_lark_parses(monkeypatch):
    monkeypatch.setattr(_tables, "GRAMMAR_CRC", _tables.GRAMMAR_CRC + 1)
    parse._parser.cache_clear()
    try:
        assert parse._parser() is None
        assert parse.parse("r = 2x; r + 1").variables == ("x",)
    finally:
        monkeypatch.undo()
        parse._parser.cache_clear()


def test_a_whole_command_never_imports_lark():
    script = ("import sys, diffcli\n"
              "diffcli.compile('r = sin(x)^2; sum(r) + x[0:2] @ [1, 2]').grad(x=[1.0, 2.0, 3.0])\n"
              "print('lark' in sys.modules)\n")
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_long_argument_lists_parse_in_linear_time():
    """An inlined `(COMMA expr)*` is extended in place: 40,000 items took about 2 minutes
    when each reduction copied the list so far (28 s for 20,000), and take about a second."""
    import time

    start = time.perf_counter()
    program = parse.parse("[" + "x, " * 40_000 + "x]")
    assert len(program.root.children[0].children) == 40_001
    assert time.perf_counter() - start < 20
