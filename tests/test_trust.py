"""Trustworthy answers: branches that are not taken stay out of derivatives,
kinks and domain problems are reported at their place in the source, --check
cross-validates, and every kind of bad input gets one clear message."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli.cli import cli
from diffcli.graph.ops import OPS

REPO = Path(__file__).resolve().parent.parent


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


# ---------------------------------------------------------------- branches not taken

# (expression, x, first three derivatives): in each, the branch not selected has a
# finite value but an infinite or nan derivative at x, or (for where) a nan value.
BRANCHES = [
    ("where(x > 0, sqrt(x), 0)", -1.0, [0.0, 0.0, 0.0]),
    ("where(x > 0, log(x), x^2)", -2.0, [-4.0, 2.0, 0.0]),
    ("where(x > 0, x * log(x), 0)", -1.0, [0.0, 0.0, 0.0]),
    ("where(x < 1, x^2, 1 / (x - 1))", 0.5, [1.0, 2.0, 0.0]),
    ("maximum(1, sqrt(x))", 0.0, [0.0, 0.0, 0.0]),
    ("minimum(-1, -sqrt(x)) + x", 0.0, [1.0, 0.0, 0.0]),
    ("maximum(x, 0) * sqrt(maximum(x, 0))", -2.0, [0.0, 0.0, 0.0]),
    ("max([1, sqrt(x), x^3])", 0.0, [0.0, 0.0, 0.0]),
    ("min([-1, -sqrt(x)])", 0.0, [0.0, 0.0, 0.0]),
    ("relu(sqrt(x) - 1)", 0.0, [0.0, 0.0, 0.0]),
    ("relu(log(x)) + x^3", 0.0, [0.0, 0.0, 6.0]),
]


@pytest.mark.parametrize("expression,x,expected", BRANCHES, ids=[b[0] for b in BRANCHES])
def test_a_branch_not_taken_contributes_exactly_zero_at_every_order(expression, x, expected):
    f = diffcli.compile(expression)
    got = [float(f.derivative(order, x=x)["x"]) for order in (1, 2, 3)]
    assert got == expected


def test_hessian_of_a_branch_not_taken_is_zero_not_nan():
    r = diffcli.compile("where(x > 0, sqrt(x) * y, y^2)").hessian(x=-1.0, y=3.0)
    assert r["x"]["x"] == 0.0 and r["x"]["y"] == 0.0 and r["y"]["y"] == 2.0


# ---------------------------------------------------------------- kinks

KINK_CASES = [
    ("abs(x)", "x=0", "abs is not differentiable at 0 (one-sided derivatives -1 and 1); using 0", 0),
    ("relu(x)", "x=0", "relu is not differentiable at 0 (one-sided derivatives 0 and 1)", 0),
    ("sign(x) + x", "x=0", "sign jumps at 0", 0),
    ("sqrt(x)", "x=0", "sqrt is not differentiable at 0; using the derivative from the right, +inf", 0),
    ("norm(v)", "v=[0, 0]", "norm is not differentiable at 0; using the subgradient 0", 0),
    ("max(v)", "v=[2, 2, 1]", "max of tied elements", 0),
    ("min(v)", "v=[1, 1]", "min of tied elements", 0),
    ("maximum(x, 1)", "x=1", "maximum of two equal values", 0),
    ("minimum(x, 1)", "x=1", "minimum of two equal values", 0),
    ("where(x > 1, x^2, 2x)", "x=1", "the condition of where is exactly on its boundary", 0),
    ("(x >= 2) * x", "x=2", "'>=' is exactly on its boundary", 3),
    ("floor(x) * x", "x=3", "floor jumps at integers", 0),
    ("ceil(x) + x", "x=-2", "ceil jumps at integers", 0),
]


@pytest.mark.parametrize("expression,at,message,column", KINK_CASES, ids=[k[0] for k in KINK_CASES])
def test_kinks_are_reported_at_their_place_and_can_fail_or_give_nan(expression, at, message, column):
    ok = run("grad", expression, "--at", at, "-q")
    assert ok.exit_code == 0
    lines = ok.stderr.splitlines()
    assert lines[0].startswith("warning: " + message)
    assert lines[1] == "  " + expression and lines[2].index("^") == 2 + column
    failed = run("grad", expression, "--at", at, "-q", "--kink", "error")
    assert failed.exit_code == 1 and failed.stdout == "" and message in failed.stderr
    nan = run("grad", expression, "--at", at, "-q", "--kink", "nan")
    assert nan.exit_code == 0 and "nan" in nan.stdout.split()


def test_no_kink_warning_away_from_kinks():
    result = run("grad", "abs(x) + relu(x) + max([x, 1]) + floor(x)", "--at", "x=2.5", "-q")
    assert result.stderr == "" and result.stdout == "3\n"


def test_kink_nan_only_poisons_the_variables_it_touches():
    r = diffcli.compile("abs(x) + y", kink="nan").grad(x=0.0, y=1.0)
    assert np.isnan(r["x"]) and r["y"] == 1.0


# ---------------------------------------------------------------- domain problems

@pytest.mark.parametrize("expression,at,message,column", [
    ("x + log(x - 2)", "x=1", "log produced nan (input -1.0)", 4),
    ("2 * (1 / x)", "x=0", "div produced inf (inputs 1.0, 0.0)", 7),
    ("asin(x) + 1", "x=2", "asin produced nan (input 2.0)", 0),
    ("exp(x) - 1", "x=1000", "exp produced inf (input 1000.0)", 0),
    ("x ** 1e308", "x=2", "pow produced inf (inputs 2.0, 1e+308)", 2),
    ("sqrt(x - 1) * 2", "x=1", "sqrt is not differentiable at 0; using the derivative from the right", 0),
    ("2 * acos(x)", "x=1", "the derivative of acos is inf (input 1.0)", 4),
])
def test_domain_problems_name_the_first_operation_and_its_input(expression, at, message, column):
    result = run("grad", expression, "--at", at, "-q")
    assert result.exit_code == 0
    warning = [line for line in result.stderr.splitlines()]
    index = next(i for i, line in enumerate(warning) if message in line)
    assert warning[index + 1] == "  " + expression and warning[index + 2].index("^") == 2 + column
    strict = run("grad", expression, "--at", at, "-q", "--strict")
    assert strict.exit_code == 1 and strict.stdout == "" and "not finite (--strict)" in strict.stderr


# ---------------------------------------------------------------- --check

def test_check_passes_on_smooth_functions_and_prints_its_tolerance():
    for command, extra in (("grad", []), ("jac", []), ("hess", []), ("vjp", ["--seed", "1"])):
        result = run(command, "x * sin(y) + exp(x * y / 3)", "--at", "x=0.7,y=-1.2", "--check", "-q", *extra)
        assert result.exit_code == 0, (command, result.stderr)
        assert "check: max error" in result.stderr and "(tolerance 1e-06): passed" in result.stderr


def test_check_fails_where_the_subgradient_is_not_the_slope():
    result = run("grad", "relu(x)", "--at", "x=0", "--check", "--json")
    assert result.exit_code == 1
    assert '"passed": false' in result.stdout and "FAILED at x" in result.stderr


def test_check_catches_a_wrong_derivative_rule(monkeypatch):

    wrong = OPS["sin"]._replace(vjp=lambda g, ans, x: (g * 1.001 * x.graph.apply("cos", (x,)),))
    monkeypatch.setitem(OPS, "sin", wrong)
    result = run("grad", "sin(x) * y", "--at", "x=0.3,y=2", "--check", "--format", "table")
    assert result.exit_code == 1
    assert "FAILED at x" in result.stdout
    assert run("grad", "sin(x) * y", "--at", "x=0.3,y=2", "--check", "--tol", "1e-2", "-q").exit_code == 0


# ---------------------------------------------------------------- the bad-input catalogue

CATALOGUE = [
    (["grad", ""], 2, "empty expression"),
    (["grad", "   "], 2, "empty expression"),
    (["grad", "(x + 1", "--at", "x=1"], 2, "'(' is never closed"),
    (["grad", "[x, 1", "--at", "x=1"], 2, "'[' is never closed"),
    (["grad", "x + 1)", "--at", "x=1"], 2, "unmatched ')'"),
    (["grad", "x +", "--at", "x=1"], 2, "expected an operand after '+'"),
    (["grad", "2 +* 3"], 2, "expected an operand after '+', found '*'"),
    (["grad", "sine(x)", "--at", "x=1"], 2, "did you mean 'sin'?"),
    (["grad", "atan2(x)", "--at", "x=1"], 2, "atan2 takes 2 arguments (1 given)"),
    (["grad", "sin * 2"], 2, "'sin' is a function: call it as sin(...)"),
    (["grad", "x(2)", "--at", "x=1"], 2, "unknown function 'x'"),
    (["grad", "x", "--at", "x=1", "--at", "x=2"], 2, "'x' is given twice"),
    (["grad", "x", "--at", "x="], 2, "--at x= has no value"),
    (["grad", "x", "--at", "x=1+"], 2, "--at x: expected an operand after '+'"),
    (["eval", "[[1, 2], [3]]"], 2, "ragged array literal"),
    (["grad", "x[5]", "--at", "x=[1, 2, 3]"], 2, "index 5 is out of range for axis 0 of size 3"),
    (["grad", "x[0.5]", "--at", "x=[1, 2, 3]"], 2, "an index must be an integer, not 0.5"),
    (["grad", "sum(x[::0])", "--at", "x=[1, 2, 3]"], 2, "slice step cannot be zero"),
    (["eval", "[1, 2] + [1, 2, 3]"], 2, "shapes do not match: a 2-vector and a 3-vector"),
    (["eval", "[[1, 2], [3, 4]] @ [1, 2, 3]"], 2, "'@' needs the inner sizes to match"),
    (["eval", "dot([1, 2], [1, 2, 3])"], 2, "'@' needs the inner sizes to match"),
    (["vjp", "x^2", "--at", "x=[1, 2]", "--seed", "[1, 2, 3]"], 2, "the seed is a 3-vector"),
    (["grad", "x \x01 2", "--at", "x=1"], 2, "control character U+0001"),
    (["grad", "2 × x", "--at", "x=1"], 2, "write '*' instead"),
    (["grad", "2 − x", "--at", "x=1"], 2, "write '-' instead"),
    (["grad", "１ + x", "--at", "x=1"], 2, "write '1' instead"),
    (["eval", "outer(x, x)", "--at", "x=[1, 2]"], 0, ""),
    (["grad", "x", "--at", "x=1", "--order", "50"], 0, ""),
    (["eval", "max(x[0:0])", "--at", "x=[1, 2]"], 2, "this slice of an axis of size 2 is empty"),
    (["grad", "prod(x[2:])", "--at", "x=[1, 2]"], 2, "is empty"),
    (["grad", "sum(x)", "--at", "x=[" + ",".join(["1"] * 100) + "]", "--order", "50", "--wrt", "x"], 2,
     "would need about"),
]


@pytest.mark.parametrize("args,status,message", CATALOGUE, ids=[" ".join(a)[:40] for a, _, _ in CATALOGUE])
def test_bad_input_catalogue(args, status, message):
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == status, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if status:
        assert result.stdout == ""


def _real(args, stdin=None, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "diffcli", *args], input=stdin, capture_output=True,
                          env=env, timeout=timeout)
    return proc, time.perf_counter() - start


def test_nul_bytes_through_a_file(tmp_path):
    path = tmp_path / "e.txt"
    path.write_bytes(b"x +\x00 1")
    proc, _ = _real(["grad", "-f", str(path), "--at", "x=1"])
    assert proc.returncode == 2 and b"NUL byte" in proc.stderr and proc.stdout == b""


def test_a_ten_megabyte_expression_is_refused_quickly(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x + " * 2_500_000 + "x")
    proc, elapsed = _real(["grad", "-f", str(path), "--at", "x=1"])
    assert proc.returncode == 2 and b"diffcli reads at most 2,000,000" in proc.stderr
    assert elapsed < 10


def test_nesting_a_million_deep_is_refused_within_seconds(tmp_path):
    path = tmp_path / "deep.txt"
    for text, message in [("(" * 1_000_000 + "x" + ")" * 1_000_000, b"diffcli reads at most 2,000,000"),
                          ("(" * 300_000 + "x" + ")" * 300_000, b"nest more than 200,000 levels"),
                          ("-" * 999_999 + "x", b"nests 1,000,000 levels deep")]:
        path.write_text(text)
        proc, elapsed = _real(["grad", "-f", str(path), "--at", "x=1"])
        assert proc.returncode == 2 and message in proc.stderr and proc.stdout == b""
        assert elapsed < 30


def test_an_allocation_too_large_is_refused_before_it_happens():
    x = np.zeros(1_000_000)
    with pytest.raises(diffcli.ShapeError, match="7,450.6 GiB for one point"):
        diffcli.compile("outer(x, x)").eval(x=x)


# ---------------------------------------------------------------- fuzzing (bounded time)

FUZZ_SECONDS = float(os.environ.get("DIFFCLI_FUZZ_SECONDS", "3"))
ALPHABET = list("xyz0123456789.+-*/^@()[],:;=<>!e ") + ["sin", "log", "sqrt", "where", "**", "pi",
                                                         "\n", "\t", "×", "\x00", "é", "1e308", "[[", "]]"]


def _fuzz_strings(rng: random.Random):
    while True:
        if rng.random() < 0.3:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 30))).decode("utf-8", "replace")
        else:
            yield "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 25)))


def test_fuzz_the_parser_and_the_cli():
    """Random bytes and grammar-shaped strings: only DiffcliError from the library,
    and from the CLI an exit status in {0, 1, 2}, no traceback, nothing on stdout
    on error. DIFFCLI_FUZZ_SECONDS=600 runs a long campaign."""
    rng = random.Random(1234)
    deadline = time.monotonic() + FUZZ_SECONDS
    tried = 0
    for text in _fuzz_strings(rng):
        if time.monotonic() > deadline and tried >= 200:
            break
        tried += 1
        try:
            diffcli.compile(text).grad({"x": 0.7, "y": -1.3, "z": 2.0, "e1": 1.0})
        except diffcli.DiffcliError:
            pass
        result = CliRunner().invoke(cli, ["grad", text, "--at", "x=0.7,y=-1.3,z=2", "--json"])
        # CliRunner turns an escaping exception into exit code 1 without a traceback on
        # stderr: only SystemExit (a deliberate status) may end a run.
        assert result.exception is None or isinstance(result.exception, SystemExit), (text, result.exception)
        assert result.exit_code in (0, 1, 2), (text, result.output, result.exception)
        assert "Traceback" not in result.stderr, text
        if result.exit_code:
            assert result.stdout == "", text


def test_a_kink_with_an_infinite_derivative_is_looked_for_only_when_a_result_is_not_finite():
    f = diffcli.compile("sqrt(x) * y")
    at = {"x": np.array([4.0, 0.0, 1.0]), "y": np.ones(3)}
    r = f.grad(at, batch_ndim=1)
    assert [k.message for k in r.kinks] == [
        "sqrt is not differentiable at 0 (at 1 of the points); using the derivative from the right, +inf"]
    assert r.kinks[0].point == 1
    (binding,) = f._bindings.values()
    (compiled,) = binding._plans.values()
    assert len(compiled.plan.outputs) == 3  # value and two derivatives: no sqrt indicator at every run
    fine = f.grad({"x": np.array([4.0, 1.0]), "y": np.ones(2)}, batch_ndim=1)
    assert fine.kinks == []
    # In a branch not taken, sqrt's kink changes nothing, and is not reported.
    assert diffcli.compile("where(x > 0, sqrt(x), 2 * x)").grad(x=0.0).kinks[0].message.startswith("the condition")
    assert all("sqrt" not in k.message for k in diffcli.compile("where(x > 0, sqrt(x), 2 * x)").grad(x=0.0).kinks)
    failed = run("grad", "sqrt(x)", "--at", "x=0", "--kink", "error")
    assert failed.exit_code == 1 and "sqrt is not differentiable at 0" in failed.stderr
