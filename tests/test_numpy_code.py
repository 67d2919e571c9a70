"""graph/numpy_code.py: the NumPy functions diffcli prints are code a user can
paste. This test runs that printed code itself (exec of diffcli's output, in the
test) and compares its numbers with diffcli's own derivatives, over every
operation of the table, vectors and matrices included, and textbook Hessians."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli.cli import cli
from diffcli.graph import autodiff
from diffcli.graph.nodes import topological_order
from diffcli.graph.numpy_code import function_source, module_source
from diffcli.graph.ops import OPS

from .test_latex import POINT, TEXTBOOK
from .test_ops import CASES


def _load(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<printed by diffcli>", "exec"), namespace)  # noqa: S102 - the code under test
    return namespace


def _arguments(function, at):
    return [np.asarray(at[name], dtype=np.float64) for name in function.variables]


@pytest.mark.parametrize("expression,at", CASES, ids=[c[0] for c in CASES])
def test_the_printed_jacobian_gives_diffcli_numbers(expression, at):
    function = diffcli.compile(expression)
    shapes = {k: np.shape(v) for k, v in at.items()}
    expected = function.jacobian(at)
    for name, source in function.formulas("jacobian", shapes, form="numpy").items():
        got = _load(source)[f"d_d{name}"](*_arguments(function, at))
        np.testing.assert_allclose(got, expected[name], rtol=1e-12, atol=1e-300, err_msg=source)


@pytest.mark.parametrize("expression", TEXTBOOK)
def test_the_printed_hessian_gives_diffcli_numbers(expression):
    function = diffcli.compile(expression)
    at = {k: POINT[k] for k in function.variables}
    expected = function.hessian(at)
    for a, row in function.formulas("hessian", form="numpy").items():
        for b, source in row.items():
            got = _load(source)[f"d2_d{a}d{b}"](*_arguments(function, at))
            np.testing.assert_allclose(got, expected[a][b], rtol=1e-11, err_msg=source)


def test_every_operation_of_the_table_is_printed_and_runs():
    """Each operation, as it occurs in the graphs of the op-table cases (forward
    and derivative), is printed by numpy_code.py, and the printed function gives
    the node's numbers."""
    seen = set()
    for expression, at in CASES:
        function = diffcli.compile(expression)
        binding = function._binding({k: np.shape(v) for k, v in at.items()})
        graph = binding.graph
        g = graph.var("g", binding.output.shape)
        outputs = [binding.output] + autodiff.vjp(graph, binding.output, g, binding.inputs)
        values = dict(at, g=np.linspace(0.5, 1.5, int(np.prod(binding.output.shape))).reshape(binding.output.shape))
        for node in topological_order(outputs):
            if node.op in seen or node.op in ("var", "const"):
                continue
            names = tuple(function.variables) + ("g",)
            source = module_source([function_source(node, "f", names)])
            got = _load(source)["f"](*[np.asarray(values[n], dtype=np.float64) for n in names])
            from diffcli.engine.evaluate import Plan
            plan = Plan([node], [binding.by_name[n] for n in function.variables] + [g])
            (want,) = plan.run([np.asarray(values[n], dtype=np.float64) for n in names])
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300, err_msg=source)
            seen.add(node.op)
    assert set(OPS) - seen == set()


def test_the_command_prints_a_module_that_runs():
    result = CliRunner().invoke(cli, ["grad", "sqrt(x^2 + y^2) * atan2(y, x)", "--symbolic", "--format", "python"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("import numpy as np\n\n\ndef d_dx(x, y):\n")
    namespace = _load(result.stdout)
    function = diffcli.compile("sqrt(x^2 + y^2) * atan2(y, x)")
    expected = function.grad(x=0.7, y=1.3)
    assert namespace["d_dx"](0.7, 1.3) == pytest.approx(float(expected["x"]), rel=1e-14)
    assert namespace["d_dy"](0.7, 1.3) == pytest.approx(float(expected["y"]), rel=1e-14)
    numpy_form = CliRunner().invoke(cli, ["grad", "sin(x)", "--symbolic", "--format", "numpy"]).stdout
    assert numpy_form == "import numpy as np\n\n\ndef d_dx(x):\n    return np.cos(x)\n"


def test_helpers_are_printed_once_and_only_when_used():
    source = diffcli.compile("sigmoid(x) * sigmoid(2 * x)").formulas("gradient", form="numpy")["x"]
    assert source.count("def _sigmoid(") == 1 and "_scatter" not in source
    assert "def _scatter(" not in diffcli.compile("x^2").formulas("gradient", form="numpy")["x"]


def test_names_python_reserves_are_renamed():
    function = diffcli.compile("lambda * np + exp(in)")
    source = function.formulas("gradient", form="numpy")["lambda"]
    assert "def d_dlambda(lambda_, np_, in_):" in source
    assert _load(source)["d_dlambda"](2.0, 3.0, 0.5) == 3.0
