"""native.py's fused C loops: the same numbers, bit for bit, as the plain NumPy
steps (which the rest of the suite checks against closed forms and finite
differences), for every operation a loop computes, with non-finite inputs,
odd layouts and threads; and what happens without a compiler, with a broken
one, with the cache, and with the probe of the C library."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import diffcli
from diffcli.engine import cbuild, native
from diffcli.graph.ops import OPS

T1 = "sin(x) * exp(-x^2 / 2) + log(1 + x^2) + tanh(x)^2"
T2 = "x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2)"
# Every operation with an exact C expression (pow's exact powers too), the C library functions,
# and NumPy steps between loops (pow, atan2, maximum, sigmoid, ...); where and
# abs put cmul / cdiv (the zero-dominant products) into the derivatives.
EXPRESSIONS = [
    T1,
    T2,
    "x / y - x * y + (-x) + 3",
    "sqrt(abs(x)) + floor(x) * y + ceil(y) * x",
    "where(x > y, x^2, 1/y) + (x <= y) * x + (x >= y) * y + (x == y) + (x != y) * x * y + (x < y) * y^2",
    "(x != y) * y - (x > y) * x",  # a comparison's 0.0 is an output (where both are 0): its sign shows
    "x^-1 + y^2 + x^1 * y + abs(x)^1.5 + 2^y",
    "sin(x) * cos(y) + cos(x) + tan(x) + exp(x) * log(abs(y) + 1) + tanh(y)",
    "atan2(y, x) + hypot(x, y) + maximum(x, y) * minimum(x, y)",
    "sigmoid(x) + softplus(y) + cbrt(x) + expm1(y) + log1p(abs(x)) + asinh(x) + atan(y)",
    "where(x > 0, sqrt(x), -x) * relu(y) + abs(y) * x",
    "sinh(y) * cosh(x) / (1 + x^2) + log2(abs(x) + 1) - log10(abs(y) + 2)",
    "exp2(x) * y - exp2(-y)",
]
N = 40_000  # past evaluate.NATIVE_MIN_ELEMENTS
# Loops over vectors: windows of a vector (x[1:], x[2:], x[1:-1], x[3]) read in
# rows, one number per point (a sum broadcast back), reductions and other steps
# left to NumPy, scatter_sum of the windows' cotangents in C; and a matrix.
VECTOR_EXPRESSIONS = [
    "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)",
    "sum((x[2:] - 2*x[1:-1] + x[:-2])^2) + x[3] * x[0]",
    "sum(sin(x[1:]) * exp(x[:-1]) / (1 + x[1:]^2))",
    "sum(where(x[1:] > x[:-1], x[1:], x[:-1]) + abs(x[1:] - x[:-1]))",
    "sum(x[1:] * x[:-1] * sum(x)) + norm(x) * x[-1]",
    "sum(x[1:] * w[:-1] + w[1:]) + sum(cumsum(x) * w)",
    "sum(x[::2] * x[1::2]^2) + sum(x[1:5] * x[4:8])",
    "sum(X[:, 1:] * X[:, :-1]) + sum(sin(X) * X)",
]


@pytest.fixture(autouse=True)
def _compile_now(monkeypatch, tmp_path_factory):
    """Kernels are built before the batch runs (not in the background), into a
    cache shared by this module's tests, and loaded from it by each test (not
    reused from an earlier test's load in this process)."""
    monkeypatch.setenv("DIFFCLI_NATIVE", "wait")
    monkeypatch.setattr(cbuild, "_loaded", {})
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "native-cache"))


def _values(names, n=N, seed=0, special=True):
    rng = np.random.default_rng(seed)
    values = {}
    for i, name in enumerate(names):
        v = rng.uniform(-3, 3, n)
        v[rng.integers(0, n, n // 50)] = 0.0
        if special:
            v[i::997] = [np.nan, np.inf, -np.inf, -0.0, 1e-310, 1e300][i % 6]
        values[name] = v
    return values


def _plan_of(function):
    binding = next(iter(function._bindings.values()))
    return next(iter(binding._plans.values())).plan


def _counting_runs(monkeypatch) -> list:
    runs = []
    run = native.Fusion.run

    def counted(self, values, into=None):
        runs.append(len(values))
        return run(self, values, into)
    monkeypatch.setattr(native.Fusion, "run", counted)
    return runs


def _assert_identical(got, want):
    """Equal, with equal signs of zeros and infinities. (Not of NaNs: which
    operand's NaN an operation passes on depends on operand order, which the C
    compiler may swap in a commutative operation; a NaN's sign is no number and
    never shown.)"""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


def _both_ways(monkeypatch, expression, compute):
    """compute(function) with the fused loops (checking they ran) and without."""
    runs = _counting_runs(monkeypatch)
    function = diffcli.compile(expression)
    fused = compute(function)
    fusion = _plan_of(function)._fusion
    assert runs, f"the fused loops did not run: {fusion and (fusion.failed, fusion.error)}"
    with monkeypatch.context() as m:
        m.setenv("DIFFCLI_NATIVE", "0")
        plain = compute(diffcli.compile(expression))
    return fused, plain


def _assert_same_results(fused, plain):
    if plain.value is None:
        assert fused.value is None
    else:
        _assert_identical(fused.value, plain.value)
    assert fused.derivatives.keys() == plain.derivatives.keys()
    for name in plain.derivatives:
        _assert_identical(fused[name], plain[name])


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_fused_loops_give_the_plain_steps_numbers(monkeypatch, expression, threads):
    monkeypatch.setenv("DIFFCLI_THREADS", threads)
    names = diffcli.compile(expression).variables
    values = _values(names, n=300_000 if threads == "2" else N)
    fused, plain = _both_ways(monkeypatch, expression, lambda f: f.grad(values, batch_ndim=1))
    _assert_same_results(fused, plain)


@pytest.mark.parametrize("expression", VECTOR_EXPRESSIONS)
def test_fused_vector_loops_give_the_plain_steps_numbers(monkeypatch, expression):
    rng = np.random.default_rng(6)
    f = diffcli.compile(expression)
    values = {name: rng.uniform(-2, 2, (4000, 3, 5) if name == "X" else (4000, 12)) for name in f.variables}
    values[f.variables[0]][7, 2] = np.nan
    values[f.variables[0]][9] = 0.0
    fused, plain = _both_ways(monkeypatch, expression, lambda f: f.grad(values, batch_ndim=1))
    _assert_same_results(fused, plain)
    fused, plain = _both_ways(monkeypatch, expression, lambda f: f.grad(values, batch_ndim=1, value=False))
    _assert_same_results(fused, plain)


def test_rosenbrock_gradient_matches_its_closed_form():
    x = np.random.default_rng(7).uniform(-2, 2, (5000, 30))
    got = diffcli.compile(VECTOR_EXPRESSIONS[0]).grad(x=x, batch_ndim=1, value=False)["x"]
    want = np.zeros_like(x)
    inner = x[:, 1:] - x[:, :-1] ** 2
    want[:, :-1] = -400 * x[:, :-1] * inner - 2 * (1 - x[:, :-1])
    want[:, 1:] += 200 * inner
    # entries up to about 400 * 4 * 2; a few roundings each
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-11)


def test_t2_matches_its_closed_form():
    """An independent check of the fused numbers themselves, not only against the plain steps."""
    rng = np.random.default_rng(3)
    x, y, z = rng.uniform(0.5, 2, N), rng.uniform(-1, 1, N), rng.uniform(-1, 1, N)
    result = diffcli.compile(T2).grad({"x": x, "y": y, "z": z}, batch_ndim=1)
    r = np.sqrt(x * x + y * y + z * z)
    # Every term is below 10 in size and each side rounds a handful of times: an
    # absolute 1e-13 (about 50 ulps of 10) bounds the difference where terms cancel.
    tolerance = {"rtol": 1e-13, "atol": 1e-13}
    np.testing.assert_allclose(result.value, x * y + np.sin(y) * z + np.log(x) * np.exp(-z) + r, **tolerance)
    np.testing.assert_allclose(result["x"], y + np.exp(-z) / x + x / r, **tolerance)
    np.testing.assert_allclose(result["y"], x + np.cos(y) * z + y / r, **tolerance)
    np.testing.assert_allclose(result["z"], np.sin(y) - np.log(x) * np.exp(-z) + z / r, **tolerance)


def test_layouts_strided_and_two_batch_axes(monkeypatch):
    rng = np.random.default_rng(4)
    columns = rng.uniform(0.5, 2, (N, 3))  # x, y, z are strided columns of one array
    strided = {"x": columns[:, 0], "y": columns[:, 1], "z": columns[:, 2]}
    fused, plain = _both_ways(monkeypatch, T2, lambda f: f.grad(strided, batch_ndim=1))
    _assert_same_results(fused, plain)
    grid = {k: rng.uniform(0.5, 2, (N // 8, 8))[:, ::-1] for k in "xyz"}  # reversed: still C order
    fused, plain = _both_ways(monkeypatch, T2, lambda f: f.grad(grid, batch_ndim=2))
    _assert_same_results(fused, plain)
    assert fused.value.shape == (N // 8, 8)


def test_other_axis_orders_keep_the_plain_steps(monkeypatch):
    """NumPy's ufuncs keep an input's axis order and its sums add in memory order,
    so a loop (writing C order) would change a later sum's last bits: Fortran-order
    inputs and plans that transpose run their plain steps (found by review: 1,084
    and 1,435 of 4,000 sums differed before)."""
    rng = np.random.default_rng(9)
    runs = _counting_runs(monkeypatch)
    x = np.asfortranarray(rng.uniform(-2, 2, (4000, 12)))
    for expression, values in [("sum(x * sin(x) / (1 + x^2))", {"x": x}),
                               ("sum(transpose(X) * 2) + norm(X * X)", {"X": rng.uniform(-2, 2, (4000, 3, 5))})]:
        got = diffcli.compile(expression).grad(values, batch_ndim=1)
        with monkeypatch.context() as m:
            m.setenv("DIFFCLI_NATIVE", "0")
            _assert_same_results(got, diffcli.compile(expression).grad(values, batch_ndim=1))
    assert runs == []
    c_order = {"x": np.ascontiguousarray(x)}
    diffcli.compile("sum(x * sin(x) / (1 + x^2))").grad(c_order, batch_ndim=1)
    assert runs  # the same plan, inputs in C order: loops


def test_vector_variables_and_a_seed_of_the_same_shape(monkeypatch):
    rng = np.random.default_rng(5)
    x, seed = rng.uniform(-2, 2, (N, 3)), rng.uniform(-1, 1, (N, 3))
    fused, plain = _both_ways(monkeypatch, "x * sin(x) / (1 + x^2)",
                              lambda f: f.vjp(seed, {"x": x}, batch_ndim=1))
    _assert_same_results(fused, plain)


def test_results_do_not_alias_each_other_or_the_inputs(monkeypatch):
    """d(x + y)/dx is the constant 1, d(x*y)/dx is y itself: each must still be its own array."""
    values = _values("xy", special=False)
    fused, plain = _both_ways(monkeypatch, "x * y + x", lambda f: f.grad(values, batch_ndim=1))
    _assert_same_results(fused, plain)
    assert not np.shares_memory(fused["x"], values["y"])
    fused["x"][0] = 123.0
    assert values["y"][0] != 123.0


def test_plans_that_do_not_qualify():
    def plan(expression, values):
        f = diffcli.compile(expression)
        f.grad(values, batch_ndim=1)
        return _plan_of(f)

    assert native.fusion_of(plan("sin(x)", {"x": np.ones(N)})) is None  # no arithmetic to fuse (cos only)
    assert native.fusion_of(plan("sum(exp(x))", {"x": np.ones((N, 4))})) is None
    assert native.fusion_of(plan("x * y", {"x": np.ones(N), "y": np.ones(N)})) is not None
    assert native.fusion_of(plan("sum(x[1:] * x[:-1])", {"x": np.ones((N, 4))})) is not None


def test_small_batches_and_inputs_that_do_not_fit_run_the_plain_steps(monkeypatch):
    runs = _counting_runs(monkeypatch)
    f = diffcli.compile(T2)
    f.grad(_values("xyz", n=1000), batch_ndim=1)
    assert runs == []
    # z given once for the whole batch: the plain steps broadcast it
    values = _values("xy")
    result = f.grad({**values, "z": np.array(0.5)}, batch_ndim=1)
    assert runs == []
    assert result["z"].shape == (N,)


def test_the_generated_source_holds_no_user_text():
    f = diffcli.compile("weird_name * 1234.5678 + sin(weird_name) / other")
    f.grad({"weird_name": np.ones(N), "other": np.full(N, 2.0)}, batch_ndim=1)
    fusion = _plan_of(f)._fusion
    _, constants, source = native._regroup(fusion.plan, native._exact_nodes(native._agreed()))
    assert "weird" not in source and "other" not in source and "1234" not in source
    assert 1234.5678 in constants


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("DIFFCLI_NATIVE", "0")
    runs = _counting_runs(monkeypatch)
    f = diffcli.compile(T2)
    f.grad(_values("xyz"), batch_ndim=1)
    assert runs == [] and _plan_of(f)._fusion is False


def test_without_a_compiler_the_plain_steps_run(monkeypatch):
    monkeypatch.setattr(cbuild, "_compiler", lambda: None)
    monkeypatch.setattr(native, "_agreement", frozenset())  # as if probed without sin and cos
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(monkeypatch_tmp(monkeypatch)))
    values = _values("xyz")
    f = diffcli.compile(T2)
    got = f.grad(values, batch_ndim=1)
    fusion = _plan_of(f)._fusion
    assert fusion.failed and "no C compiler" in fusion.error
    with monkeypatch.context() as m:
        m.setenv("DIFFCLI_NATIVE", "0")
        _assert_same_results(got, diffcli.compile(T2).grad(values, batch_ndim=1))


def monkeypatch_tmp(monkeypatch):
    import tempfile

    directory = tempfile.mkdtemp(prefix="diffcli-empty-cache-")
    return directory


def test_a_failing_compiler_leaves_no_partial_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_agreement", frozenset())
    monkeypatch.setattr(cbuild, "FLAGS", cbuild.FLAGS + ("-fno-such-flag-diffcli",))
    f = diffcli.compile(T2)
    values = _values("xyz", special=False)
    got = f.grad(values, batch_ndim=1)
    fusion = _plan_of(f)._fusion
    assert fusion.failed and "no-such-flag" in fusion.error
    assert list((tmp_path / "kernels").iterdir()) == []
    np.testing.assert_allclose(got.value, diffcli.compile(T2).eval(values, batch_ndim=1).value, rtol=0)


def test_kernels_are_cached_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    values = _values("xyz", special=False)
    first = diffcli.compile(T2).grad(values, batch_ndim=1)
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert built and all(name.endswith(".kernel") for name in built)

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again instead of loading the cached kernel")
    monkeypatch.setattr(subprocess, "Popen", no_compiler)
    runs = _counting_runs(monkeypatch)
    again = diffcli.compile(T2).grad(values, batch_ndim=1)  # a new plan, the same source
    assert runs
    _assert_same_results(again, first)
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == built


def test_the_probe_keeps_only_functions_that_agree_with_numpy():
    agreed = native._agreed()
    assert agreed <= set(native.library_functions())
    library = cbuild.compiled(native._probe_source())
    x = np.random.default_rng(99).uniform(-50, 50, 100_000)
    for name in agreed:
        y = np.empty_like(x)
        cbuild.function(library, f"probe_{name}", 3)(x.size, native._address(x), native._address(y))
        _assert_identical(y, OPS[name].kernel(None)(x))


def test_the_probe_rejects_a_function_off_by_one_ulp(monkeypatch):
    def sin_one_ulp_up(x):
        return np.nextafter(np.sin(x), np.inf)
    ops = dict(native.OPS)
    ops["sin"] = ops["sin"]._replace(kernel=lambda node: sin_one_ulp_up)
    monkeypatch.setattr(native, "OPS", ops)
    agreed = native._probe()
    assert "sin" not in agreed and "cos" not in agreed  # cos goes too: sin and cos of one x become one sincos


def test_the_probe_is_remembered_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_agreement", None)
    first = native._agreed()
    (record,) = (tmp_path / "probes").iterdir()
    assert cbuild.unsealed(record.stem, record.read_bytes()).decode().split() == sorted(first)

    def no_probe():
        raise AssertionError("probed again")
    monkeypatch.setattr(native, "_probe", no_probe)
    monkeypatch.setattr(native, "_agreement", None)
    assert native._agreed() == first


def test_the_cli_pipeline_prints_the_same_text_with_and_without_loops(monkeypatch):
    """70,000 points: a chunk of 65,536 runs the loops, the rest (too small) the plain steps."""
    from click.testing import CliRunner

    from diffcli.cli import cli

    rng = np.random.default_rng(8)
    rows = ["x,y,z"] + [f"{x!r},{y!r},{z!r}" for x, y, z in rng.uniform(0.5, 2, (70_000, 3)).tolist()]
    rows[5] = "0,0,0"  # log(0) and 0/0: -inf and nan in the output
    text = "\n".join(rows) + "\n"
    outputs = {}
    for mode in ("wait", "0"):
        monkeypatch.setenv("DIFFCLI_NATIVE", mode)
        runs = _counting_runs(monkeypatch)
        result = CliRunner().invoke(cli, ["grad", T2, "--points", "-", "--in", "csv", "--format", "csv"], input=text)
        assert bool(runs) == (mode == "wait")
        outputs[mode] = result.stdout
    assert outputs["wait"] == outputs["0"]
    assert outputs["0"].count("\n") == 70_001 and "nan" in outputs["0"]


def test_a_small_batch_runs_plain_steps_while_its_loops_build_then_uses_them(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_NATIVE", "on")
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))  # empty: a build takes 0.1 s or more
    runs = _counting_runs(monkeypatch)
    f = diffcli.compile(T2)
    values = _values("xyz")
    first = f.grad(values, batch_ndim=1)
    assert runs == []
    _plan_of(f)._fusion._building.join()
    second = f.grad(values, batch_ndim=1)
    assert runs
    _assert_same_results(second, first)


def test_when_a_batch_waits_for_its_loops(monkeypatch):
    monkeypatch.setenv("DIFFCLI_NATIVE", "on")
    assert native.patience(work=10**10, steps=35) is None  # 15 s of plain steps: worth a build
    short = native.patience(work=35 * 40_000, steps=35)  # 2 ms of plain steps: a cached build at most
    assert short is not None and short <= 35 * 40_000 * native.PLAIN_SECONDS_PER_OPERATION / 2
    assert native.patience(work=10**10, steps=100_000) is not None  # a huge plan compiles too long
    monkeypatch.setenv("DIFFCLI_NATIVE", "wait")
    assert native.patience(work=1, steps=1) is None
    for off in ("0", "off", "False", " no "):
        monkeypatch.setenv("DIFFCLI_NATIVE", off)
        assert not native.enabled()


def test_a_loop_too_long_to_compile_keeps_the_plain_steps(monkeypatch):
    monkeypatch.setattr(native, "LOOP_NODES", 5)
    runs = _counting_runs(monkeypatch)
    values = _values("xyz")
    f = diffcli.compile(T2)
    got = f.grad(values, batch_ndim=1)
    fusion = _plan_of(f)._fusion
    assert runs == [] and fusion.failed and "too long to compile" in fusion.error
    with monkeypatch.context() as m:
        m.setenv("DIFFCLI_NATIVE", "0")
        _assert_same_results(got, diffcli.compile(T2).grad(values, batch_ndim=1))


def test_too_many_operations_keep_the_plain_steps(monkeypatch):
    monkeypatch.setattr(native, "MAX_FUSED", 10)
    f = diffcli.compile(T2)
    f.grad(_values("xyz", n=10), batch_ndim=1)
    assert native.fusion_of(_plan_of(f)) is None


def test_after_a_fork_locks_are_fresh_and_a_lost_build_starts_again():
    import threading

    f = diffcli.compile("x * y + x")
    f.grad(_values("xy", n=10), batch_ndim=1)
    fusion = native.fusion_of(_plan_of(f))
    fusion._lock.acquire()  # as if another thread held it when the process forked
    native._after_fork_in_child()
    assert fusion._lock.acquire(timeout=1)
    fusion._lock.release()
    gone = threading.Thread(target=lambda: None)  # a build thread that ended without a result
    gone.start()
    gone.join()
    fusion._building = gone
    assert fusion.ready(None) and fusion.actions is not None


def test_a_forked_child_evaluates_big_batches_after_the_parent_did(monkeypatch):
    """The parent's thread pool (and any build thread) is gone in a forked child;
    the child must make its own instead of waiting for them for ever."""
    import multiprocessing

    monkeypatch.setenv("DIFFCLI_THREADS", "2")
    x = np.random.default_rng(11).uniform(-1, 1, (100_000, 8))
    f = diffcli.compile("sum(x * sin(x) / (1 + x^2))")
    want = f.grad(x=x, batch_ndim=1)["x"]
    _in_the_child[:] = [f, x]  # the child inherits them with the memory (a Function does not pickle)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_gradient_in_child).get(timeout=120)
    _assert_identical(got, want)


_in_the_child: list = []


def _gradient_in_child():
    f, x = _in_the_child
    return f.grad(x=x, batch_ndim=1)["x"]


def test_the_probe_cache_depends_on_the_cpu_features_numpy_uses(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFCLI_CACHE_DIR", str(tmp_path))
    native._probe_cached()
    monkeypatch.setenv("NPY_DISABLE_CPU_FEATURES", "AVX512_SKX")  # as a process started so would have it
    native._probe_cached()
    assert len(list((tmp_path / "probes").iterdir())) == 2
