"""The evaluator: big batches in blocks on threads give exactly what one pass gives."""

from __future__ import annotations

import numpy as np
import pytest

import diffcli
from diffcli.engine import evaluate


def _blocked_and_whole(monkeypatch, fn):
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)  # many blocks even for a modest batch
    blocked = fn()
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 40)  # one pass
    whole = fn()
    return blocked, whole


def test_blocked_gradient_is_bit_for_bit_the_whole_pass(monkeypatch):
    rng = np.random.default_rng(0)
    n = 50_000
    at = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": np.full(n, 0.25)}
    f = diffcli.compile("x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2) + 2*z")
    blocked, whole = _blocked_and_whole(monkeypatch, lambda: f.grad(at, batch_ndim=1))
    np.testing.assert_array_equal(blocked.value, whole.value)
    for name in "xyz":
        np.testing.assert_array_equal(blocked[name], whole[name])
    assert blocked.value.shape == (n,) and blocked["z"].shape == (n,)


def test_blocked_jacobian_with_seed_axes_and_constant_rows(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (20_000, 3))
    f = diffcli.compile("[x[0] * x[1], 2 * x[2], sum(x^2)]")  # the middle row is constant
    blocked, whole = _blocked_and_whole(monkeypatch, lambda: f.jacobian(x=x, batch_ndim=1))
    np.testing.assert_array_equal(blocked["x"], whole["x"])
    assert blocked["x"].shape == (20_000, 3, 3)
    np.testing.assert_array_equal(blocked["x"][:, 1], np.tile([0.0, 0.0, 2.0], (20_000, 1)))


def test_an_output_that_is_an_input_is_a_copy():
    y = np.array([1.0, 2.0, 3.0])
    r = diffcli.compile("x * y").jacobian(x=np.zeros(3), y=y)
    r = diffcli.compile("x * y").grad(x=0.0, y=2.5)  # d/dx is the node y itself
    assert r["x"] == 2.5
    ys = np.array([1.0, 2.0])
    r = diffcli.compile("x * y").grad(x=np.zeros(2), y=ys, batch_ndim=1)
    r["x"][0] = 99.0
    assert ys[0] == 1.0  # the result is not the caller's array


def test_results_do_not_alias_each_other():
    r = diffcli.compile("exp(x)").grad(x=np.array([1.0, 2.0]), batch_ndim=1)  # d/dx is the value node
    r["x"][:] = 0.0
    np.testing.assert_array_equal(r.value, np.exp([1.0, 2.0]))
    r = diffcli.compile("exp(x + y)").grad(x=np.array([1.0, 2.0]), y=np.array([0.0, 1.0]), batch_ndim=1)
    assert r["x"] is not r["y"]


def test_batch_axes_of_size_one_broadcast_across_blocks(monkeypatch):
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=(30_000, 1)), rng.uniform(size=(30_000, 3))
    np.testing.assert_array_equal(diffcli.compile("x * y").eval(x=x, y=y, batch_ndim=2).value, x * y)


def test_a_nonfinite_point_in_a_big_batch_is_found_and_named():
    x = np.linspace(1, 2, 100_000)
    x[76_543] = -1.0
    r = diffcli.compile("log(x) + x").grad(x=x, batch_ndim=1)
    (found,) = r.diagnostics
    assert found.point == 76_543 and "log produced nan (input -1.0)" in found.message


def test_a_long_plan_on_a_modest_batch_is_split_across_threads_bit_for_bit(monkeypatch):
    """A batch too small for the block size is still shared among threads when its
    plan is long (T8's shape); the numbers are those of one pass."""
    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    f = diffcli.compile(" + ".join(f"{c}*sin({a}*x + {c})" for a, c in zip(range(1, 40), range(40, 1, -1))))
    x = np.random.default_rng(3).uniform(-1, 1, 9_001)
    split_points = []
    original = evaluate.Plan.run
    monkeypatch.setattr(evaluate.Plan, "run", lambda self, values, *into, **options: split_points.append(len(values[0])) or
                        original(self, values, *into, **options))
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    split = f.grad(x=x, batch_ndim=1)
    assert sorted(split_points) == [4_500, 4_501]
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 1 << 60)
    whole = f.grad(x=x, batch_ndim=1)
    np.testing.assert_array_equal(split.value, whole.value)
    np.testing.assert_array_equal(split["x"], whole["x"])


def test_blocks_are_claimed_in_turn_so_a_stalled_thread_takes_fewer(monkeypatch):
    """Each thread claims the next block when it is free, so a thread the machine
    stalls (here: for 0.3 s on its first block) leaves its share to the others;
    every block is still run exactly once, and the numbers are those of one pass."""
    import threading
    import time

    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    monkeypatch.setattr(evaluate, "MIN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    f = diffcli.compile("sin(x) * exp(x)")
    x = np.random.default_rng(5).uniform(-1, 1, 20 * 1024)
    runs = []
    original = evaluate.Plan.run

    def run(self, values, into=None, **options):
        main = threading.current_thread() is threading.main_thread()
        if not main and not any(not on_main for on_main, _ in runs):
            time.sleep(0.3)
        runs.append((main, values[0].__array_interface__["data"][0]))
        return original(self, values, into, **options)
    monkeypatch.setattr(evaluate.Plan, "run", run)
    split = f.grad(x=x, batch_ndim=1)
    monkeypatch.setattr(evaluate.Plan, "run", original)
    starts = sorted((address - x.__array_interface__["data"][0]) // 8 for _, address in runs)
    assert starts == list(range(0, 20 * 1024, 1024))
    assert sum(not main for main, _ in runs) <= 2
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 1 << 60)
    whole = f.grad(x=x, batch_ndim=1)
    np.testing.assert_array_equal(split.value, whole.value)
    np.testing.assert_array_equal(split["x"], whole["x"])


def test_an_error_in_any_thread_stops_every_thread_claiming_blocks(monkeypatch):
    """A failing block (or Ctrl-C) on one thread reaches the caller without the
    other threads first running the rest of the batch."""
    import threading
    import time

    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    monkeypatch.setattr(evaluate, "MIN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    original = evaluate.Plan.run
    for failing in ("pool", "main"):
        runs = []

        def run(self, values, into=None, **options):
            main = threading.current_thread() is threading.main_thread()
            runs.append(main)
            if (failing == "main") == main and runs.count(main) == 2:
                raise KeyboardInterrupt if main else ValueError("a block")
            time.sleep(0.002)
            return original(self, values, into, **options)
        monkeypatch.setattr(evaluate.Plan, "run", run)
        with pytest.raises(KeyboardInterrupt if failing == "main" else ValueError):
            diffcli.compile("sin(x)").eval(x=np.zeros(100 * 1024), batch_ndim=1)
        assert len(runs) < 30, failing  # of 100 blocks


def test_no_more_threads_are_asked_than_there_are_blocks(monkeypatch):
    monkeypatch.setenv("DIFFCLI_THREADS", "8")
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    submitted = []
    pool = evaluate._executor()
    original = pool.submit
    monkeypatch.setattr(pool, "submit", lambda *a: submitted.append(a) or original(*a))
    x = np.linspace(0, 1, 2 * evaluate.MIN_BLOCK_ELEMENTS)
    np.testing.assert_array_equal(diffcli.compile("sin(x)").eval(x=x, batch_ndim=1).value, np.sin(x))
    assert len(submitted) == 1  # two blocks: one for this thread, one for the pool


def test_an_error_in_the_first_block_is_raised_and_nothing_waits_forever(monkeypatch):
    import threading

    import pytest

    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    original = evaluate.Plan.run

    def run(self, values, into=None, **options):
        if threading.current_thread() is threading.main_thread():
            raise MemoryError("the first block")
        return original(self, values, into, **options)
    monkeypatch.setattr(evaluate.Plan, "run", run)
    with pytest.raises(MemoryError):
        diffcli.compile("sin(x)").eval(x=np.zeros(10_000), batch_ndim=1)


def test_floating_point_errors_are_quiet_inside_a_plan_and_untouched_outside():
    import warnings

    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning would raise here
        r = diffcli.compile("log(x) + 1/x + sqrt(x - 1)").grad(x=0.0)
    assert np.isnan(r.value) and np.geterr() == before
    with pytest.warns(RuntimeWarning):
        np.log(np.zeros(1))  # the caller's own NumPy still warns as configured


def test_an_interrupt_while_blocks_are_handed_out_leaves_no_thread_waiting(tmp_path):
    """Ctrl-C landing between two submits must not leave a worker waiting for the
    first block forever (the process would hang at exit)."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "interrupt.py"
    script.write_text(
        "import numpy as np, diffcli\n"
        "from diffcli.engine import evaluate\n"
        "pool = evaluate._executor()\n"
        "real, calls = pool.submit, [0]\n"
        "def flaky(fn, *args):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 2:\n"
        "        raise KeyboardInterrupt\n"
        "    return real(fn, *args)\n"
        "pool.submit = flaky\n"
        "try:\n"
        "    diffcli.compile('sin(x) * exp(cos(x))').grad(x=np.linspace(-1, 1, 1_000_000), batch_ndim=1)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin",
           "DIFFCLI_THREADS": "3"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "interrupted"


def test_sums_that_overflow_while_checking_results_print_no_numpy_warning():
    from click.testing import CliRunner

    from diffcli.cli import cli

    for args in (["jac", "1e308*x", "--at", "x=[1,2]", "--json"], ["hess", "sum(1e308*x^2)/2", "--at", "x=[1,1]"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "RuntimeWarning" not in result.stderr, result.stderr


def test_kink_nan_hessians_build_only_the_graph_they_use():
    f = diffcli.compile("sum(sqrt(x) * x)", kink="nan")
    f.hessian(x=np.ones(3))
    (binding,) = f._bindings.values()
    assert list(binding._gradients) == [(("x",), True)]


def test_later_blocks_compute_their_outputs_in_place_bit_for_bit(monkeypatch):
    written = []
    original = evaluate._into
    monkeypatch.setattr(evaluate, "_into", lambda ufunc, args, target: written.append(ufunc) or
                        original(ufunc, args, target))
    rng = np.random.default_rng(4)
    at = {"x": rng.uniform(0.5, 2, 40_000), "y": rng.uniform(-1, 1, 40_000)}
    f = diffcli.compile("x*y + sin(y) * exp(-x) + sqrt(x^2 + y^2)")
    blocked, whole = _blocked_and_whole(monkeypatch, lambda: f.grad(at, batch_ndim=1))
    assert written  # some block wrote straight into the full outputs
    np.testing.assert_array_equal(blocked.value, whole.value)
    for name in "xy":
        np.testing.assert_array_equal(blocked[name], whole[name])


@pytest.mark.parametrize("expression", ["sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)",
                                        "sum(sin(x[::2])) + sum(x[1:] * x[:-1])"])
def test_a_gathered_gradient_computed_into_the_blocks_outputs_is_the_whole_pass(monkeypatch, expression):
    """scatter_sum writes straight into each later block's share of the output
    (a box of slices, and a stepped slice that starts from zeros), on threads."""
    x = np.random.default_rng(11).uniform(-1, 1, (3_000, 20))
    f = diffcli.compile(expression)
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    blocked, whole = _blocked_and_whole(monkeypatch, lambda: f.grad(x=x, batch_ndim=1, value=False))
    np.testing.assert_array_equal(blocked["x"], whole["x"])
    assert np.all(blocked["x"] != 0)


def test_a_nan_in_a_late_block_is_found_and_an_overflowing_sum_is_not_blamed(monkeypatch):
    """Finiteness is summed block by block on the threads: a nan far into the
    batch is still diagnosed at its point, and blocks whose sums overflow (every
    entry finite) give no warning."""
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    monkeypatch.setattr(evaluate, "MIN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    x = np.random.default_rng(12).uniform(0.5, 2, 20_000)
    x[17_345] = 0.0
    r = diffcli.compile("log(x) * 3").grad(x=x, batch_ndim=1)
    assert len(r.diagnostics) == 1 and r.diagnostics[0].point == 17_345 and "log" in r.diagnostics[0].message
    huge = np.full(20_000, 1e308)
    r = diffcli.compile("x * 1.5").grad(x=huge, batch_ndim=1)
    assert np.all(np.isfinite(r.value)) and r.diagnostics == []


def test_an_interrupt_after_the_first_block_reaches_the_caller_as_itself(monkeypatch):
    monkeypatch.setenv("DIFFCLI_THREADS", "1")
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    original, calls = evaluate.Plan.run, []

    def run(self, values, into=None, **options):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, values, into, **options)
    monkeypatch.setattr(evaluate.Plan, "run", run)
    with pytest.raises(KeyboardInterrupt):
        diffcli.compile("sum(sin(x))").grad(x=np.ones((20_000, 3)), batch_ndim=1)


def test_kinks_and_fallbacks_do_not_depend_on_blocking_when_sums_overflow(monkeypatch):
    """Every entry finite but a block's (or the batch's) sum overflowing: no
    spurious kink report, and the same numbers however the batch is cut."""
    y = np.random.default_rng(13).uniform(0.6, 1, 20_000)
    y[7] = 0.0
    f = diffcli.compile("1e304*y + where(y < 0.5, 0, sqrt(y))")
    x = np.random.default_rng(14).uniform(0.5, 1, (20_000, 6))
    h = diffcli.compile("sum(1e303*x^3 * -1)")
    runs = []
    for block in (1 << 10, 1 << 40):
        monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", block)
        monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setenv("DIFFCLI_THREADS", "3")
        runs.append((f.grad(y=y, batch_ndim=1), h.hessian(x=x, batch_ndim=1)))
    (g1, h1), (g2, h2) = runs
    assert g1.kinks == [] and g2.kinks == [] and g1.diagnostics == g2.diagnostics == []
    np.testing.assert_array_equal(g1["y"], g2["y"])
    assert np.array_equal(np.signbit(h1["x"]["x"]), np.signbit(h2["x"]["x"]))


def _gradient_plan(text: str, shapes: dict):
    """A Plan of an expression and its gradient, built from the modules' own interfaces."""
    from diffcli.graph import autodiff
    from diffcli.graph.nodes import Graph
    from diffcli.language.parse import parse

    program = parse(text)
    graph = Graph()
    output = program.build(graph, shapes)
    inputs = [graph.var(name, shapes[name]) for name in program.variables]
    gradient = autodiff.vjp(graph, output, graph.const(1.0), inputs)
    return evaluate.Plan([output] + gradient, inputs)


def test_the_public_plan_describes_every_step():
    """What a back-end reads (evaluate.Step and the plan's slots) says what the
    plan does: each step's operation, operands, result slot and shape are its
    node's; a slot is released after its last reader and never when it is an
    output or a constant; and running the steps one by one through Step.run
    (as native.py runs the steps it does not compile) gives run()'s outputs."""
    plan = _gradient_plan("sum(sin(x) * x[0]) + log(y + 2) * y", {"x": (3,), "y": ()})
    slot = plan.slot
    assert [plan.order[s] for s in plan.input_slots] == plan.inputs
    assert [plan.order[s] for s in plan.output_slots] == plan.outputs
    last_reader = {}
    for i, step in enumerate(plan.steps):
        node = step.node
        assert (step.op, step.shape, step.output) == (node.op, node.shape, slot[node.id])
        assert step.inputs == tuple(slot[a.id] for a in node.args)
        assert all(s < step.output for s in step.inputs)  # operands are made before (topological order)
        for s in step.inputs:
            last_reader[s] = i
    released = {s: i for i, step in enumerate(plan.steps) for s in step.releases}
    constants = {s for s, node in enumerate(plan.order) if node.op == "const"}
    assert released == {s: i for s, i in last_reader.items() if s not in set(plan.output_slots) | constants}
    values = [np.array([0.3, -0.7, 1.1]), np.array(0.5)]
    slots = plan.fresh_slots(values)
    with np.errstate(all="ignore"):
        for step in plan.steps:
            step.run(slots)
    by_hand, run = plan.collect(slots), plan.run(values)
    for a, b in zip(by_hand, run):
        np.testing.assert_array_equal(a, b)
    x, y = values
    np.testing.assert_allclose(run[0], np.sum(np.sin(x) * x[0]) + np.log(y + 2) * y, rtol=1e-15)
    np.testing.assert_allclose(run[1], np.cos(x) * x[0] + np.eye(3)[0] * np.sum(np.sin(x)), rtol=1e-15)
    np.testing.assert_allclose(run[2], 1 / (y + 2) * y + np.log(y + 2), rtol=1e-15)


def test_a_step_writes_into_a_given_output_array():
    plan = _gradient_plan("x * x + 1", {"x": (4,)})
    x = np.arange(4.0)
    target = np.empty(4)
    slots = plan.fresh_slots([x])
    for step in plan.steps:
        step.run(slots, target if step.output == plan.output_slots[0] else None)
    assert slots[plan.output_slots[0]] is target
    np.testing.assert_array_equal(target, x * x + 1)
