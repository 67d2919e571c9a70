"""api/formulas.py: the derivative's formulas in each form, and the labelled
matrix a terminal shows (one entry a line, shared subexpressions named once
above them), through Function and through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli.api.formulas import MAX_ENTRIES
from diffcli.cli import cli
from diffcli.errors import UsageError


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_a_hessian_on_a_terminal_is_a_labelled_matrix_one_entry_a_line():
    result = _invoke("hess", "exp(x*y)", "--symbolic", "--format", "table", "--color", "never")
    assert result.exit_code == 0
    assert result.stdout == ("t1 = exp(x * y)\n"
                             "d2/dxdx = y ^ 2 * t1\nd2/dxdy = t1 * (1 + x * y)\nd2/dydx = t1 * (1 + x * y)\n"
                             "d2/dydy = x ^ 2 * t1\n")


def _entry_value(lets, text, at):
    source = "; ".join([f"{name} = {value}" for name, value in lets] + [text])
    function = diffcli.compile(source)
    return float(function.eval({k: at[k] for k in function.variables}).value)


@pytest.mark.parametrize("kind,expression,at", [
    ("jacobian", "[x * y, sin(y)] * z[0] + z", {"x": 0.7, "y": 1.3, "z": [0.5, 2.0]}),
    ("hessian", "sum(x^3) * y + x[0] * x[1]", {"x": [0.5, -1.5], "y": 0.25}),
    ("gradient", "norm(x) * y", {"x": [0.5, -1.5, 2.0], "y": 0.25}),
])
def test_each_labelled_entry_with_the_shared_lets_gives_its_number(kind, expression, at):
    function = diffcli.compile(expression)
    shapes = {k: np.shape(v) for k, v in at.items()}
    lets, entries = function.formula_table(kind, shapes)
    result = function.compute(kind, at)
    expected = {}
    for name in function.variables:
        blocks = result[name] if kind != "hessian" else {b: result[name][b] for b in function.variables}
        for b, block in (blocks.items() if kind == "hessian" else [(None, blocks)]):
            for index in np.ndindex(*np.shape(block)):
                expected[(name, b, index)] = float(np.asarray(block)[index])
    assert len(entries) == len(expected)
    for label, text in entries:
        want = _expected_for(label, expected, function.variables)
        assert _entry_value(lets, text, at) == pytest.approx(want, rel=1e-12, abs=1e-15)


def _expected_for(label: str, expected: dict, variables) -> float:
    """The number a label names: dvalue[i]/dx, d2/dx[i]dy, d/dx[i]."""
    import re

    names = "|".join(variables)
    parts = re.findall(rf"d({names})((?:\[[\d,]+\])?)", label.split("/", 1)[1])
    top = re.search(r"value\[([\d,]+)\]", label.split("/", 1)[0])
    index = tuple(int(i) for i in top.group(1).split(",")) if top else ()
    names = []
    for name, brackets in parts:
        names.append(name)
        index += tuple(int(i) for i in brackets.strip("[]").split(",")) if brackets else ()
    key = (names[0], names[1] if len(names) > 1 else None, index)
    return expected[key]


def test_labels_in_each_form():
    jac = diffcli.compile("x * y").formula_table("jacobian", {"y": (2,)}).entries
    assert [label for label, _ in jac] == ["dvalue[0]/dx", "dvalue[1]/dx", "dvalue[0]/dy[0]", "dvalue[0]/dy[1]",
                                           "dvalue[1]/dy[0]", "dvalue[1]/dy[1]"]
    assert [label for label, _ in diffcli.compile("sum(x^2)").formula_table("gradient", {"x": (2,)}).entries] \
        == ["d/dx[0]", "d/dx[1]"]
    assert [label for label, _ in diffcli.compile("x^4").formula_table("derivative", wrt=["x"], order=3).entries] \
        == ["d3/dx3"]
    hessian = diffcli.compile("x * y^2").formula_table("hessian", form="latex").entries
    assert [label for label, _ in hessian] == [
        r"\frac{\partial^{2} f}{\partial x^{2}}", r"\frac{\partial^{2} f}{\partial x \partial y}",
        r"\frac{\partial^{2} f}{\partial y \partial x}", r"\frac{\partial^{2} f}{\partial y^{2}}"]
    entries = diffcli.compile("x * x1").formula_table("jacobian", {"x": (2,)}, form="latex").entries
    assert entries[0][0] == r"\frac{\partial f_{0}}{\partial x_{0}}"
    assert entries[-1][0] == r"\frac{\partial f_{1}}{\partial x_{1}}"


def test_a_block_too_large_to_split_is_one_line():
    size = MAX_ENTRIES + 1
    lets, entries = diffcli.compile("x^2").formula_table("jacobian", {"x": (size,)})
    assert [label for label, _ in entries] == ["d/dx"]


def test_a_form_is_one_of_three():
    with pytest.raises(UsageError, match="form must be one of diffcli, latex, numpy"):
        diffcli.compile("x").formulas("gradient", form="mathml")
    with pytest.raises(UsageError, match="use numpy_source"):
        diffcli.compile("x").formula_table("gradient", form="numpy")
    source = diffcli.compile("x * y").numpy_source("hessian")
    assert source.count("def d2_d") == 4 and source.startswith("import numpy as np\n")


def test_the_command_line_forms():
    latex = _invoke("grad", "x/(1+x^2)", "--symbolic", "--format", "latex")
    assert latex.stdout == r"\frac{\partial f}{\partial x} = \frac{1 - x^{2}}{\left(1 + x^{2}\right)^{2}}" "\n"
    bare = _invoke("grad", "x/(1+x^2)", "--symbolic", "--format", "latex", "-q")
    assert bare.stdout == diffcli.compile("x/(1+x^2)").formulas("gradient", form="latex")["x"] + "\n"
    document = json.loads(_invoke("hess", "x * y^2", "--symbolic", "--json").stdout)
    assert set(document) == {"expression", "hessian", "latex", "numpy"}
    assert document["hessian"]["y"]["y"] == "2 * x" and document["latex"]["y"]["y"] == r"2 \cdot x"
    assert "def d2_dydy(x, y):" in document["numpy"]["y"]["y"]
    refused = _invoke("grad", "x^2", "--at", "x=1", "--format", "latex")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "--format latex writes formulas: it goes with --symbolic" in refused.stderr
    refused = _invoke("grad", "x^2", "--symbolic", "--format", "csv")
    assert refused.exit_code == 2 and "not csv" in refused.stderr
    refused = _invoke("grad", "x^2", "--format", "python", "--engine", "dask", "--points", "examples/points.csv",
                      "-o", "out/")
    assert refused.exit_code == 2 and "--engine dask writes files" in refused.stderr


def test_an_entry_reads_as_its_own_formula():
    """Entries are pushed through literals, broadcasts and elementwise operations:
    d/dx[0] of sum(x^2) is 2 * x[0], not an entry of a named vector."""
    assert diffcli.compile("sum(x^2)").formula_table("gradient", {"x": (2,)}).entries == [
        ("d/dx[0]", "2 * x[0]"), ("d/dx[1]", "2 * x[1]")]


def test_the_printers_do_not_recurse_on_depth():
    """5,000 nested calls (Python's recursion limit is 1,000), in every form."""
    function = diffcli.compile("sin(" * 5000 + "x" + ")" * 5000)
    for form in ("diffcli", "latex", "numpy"):
        assert function.formulas("gradient", form=form)["x"]
    assert function.formula_table("gradient").entries[0][0] == "d/dx"
    assert function.formula_table("gradient", form="latex").entries[0][0] == r"\frac{\partial f}{\partial x}"
    assert function.numpy_source("gradient").startswith("import numpy as np")
    namespace: dict = {}
    exec(function.formulas("gradient", form="numpy")["x"], namespace)  # noqa: S102 - the printed code under test
    assert namespace["d_dx"](0.5) == pytest.approx(float(function.grad(x=0.5)["x"]), rel=1e-12)
