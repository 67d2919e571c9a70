"""The memory budget (budget.py, function.py, growth.py, evaluate.Plan.peak_bytes): every request
is estimated before it runs and refused, with the estimate and the limit, when
it would need more than --max-memory / max_memory."""

from __future__ import annotations

import gc
import json
import re
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli import api, budget
from diffcli.cli import cli

from .test_cli import _diffcli_command, _env

# The memory bombs run under this address-space limit: a regression dies with
# MemoryError instead of eating the machine (and the default budget is half of it).
ADDRESS_SPACE = 2560 << 20


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run_limited(args: list[str], timeout: float = 60, graph_orders: bool = False
                 ) -> tuple[subprocess.CompletedProcess, float]:
    """graph_orders: higher orders by differentiating the graph per order
    (DIFFCLI_TAYLOR=0), the method whose growth is bounded here."""
    started = time.monotonic()
    env = {**_env(), "DIFFCLI_TAYLOR": "0"} if graph_orders else _env()
    proc = subprocess.run(_diffcli_command() + args, capture_output=True, text=True, env=env,
                          preexec_fn=_limited, timeout=timeout)
    return proc, time.monotonic() - started


def _vector(n: int) -> str:
    """x=[0,1,...,6,0,1,...] with n entries: short enough for one argument."""
    return "x=[" + ",".join(str(i % 7) for i in range(n)) + "]"


def _assert_refused(proc, *phrases):
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    line = proc.stderr.rstrip("\n")
    assert "\n" not in line and line.startswith("error: "), proc.stderr
    for phrase in phrases:
        assert phrase in line, line


# ---------------------------------------------------------------- the bombs of issue 14


def test_default_budget_is_half_the_address_space_limit():
    code = "from diffcli.budget import default_budget; print(default_budget())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                          preexec_fn=_limited, timeout=60)
    assert int(proc.stdout) == ADDRESS_SPACE // 2


def test_tan_order_16_by_the_graph_is_refused_quickly():
    """The graph grows about 2.8x an order (order 14 took 8 s and 508 MB, 16 over 3 GB):
    refused from the growth of the first orders, before it is built."""
    proc, seconds = _run_limited(["grad", "tan(x)", "--at", "x=0.7", "--order", "16"], graph_orders=True)
    _assert_refused(proc, "the order-16 derivative would take too long to build", "against a limit of 1e+07")
    assert seconds < 20


def test_tan_order_16_by_the_graph_is_refused_for_memory_under_a_small_budget():
    proc, seconds = _run_limited(["grad", "tan(x)", "--at", "x=0.7", "--order", "16", "--max-memory", "5M"],
                                 graph_orders=True)
    _assert_refused(proc, "would need a derivative graph of about", "over the memory budget of 5 MiB")
    assert seconds < 20


def test_gradient_of_a_huge_outer_product_is_refused_under_the_default_budget():
    """At 11,000 entries outer(x, x) is 968 MB, and the gradient's plan holds two
    such arrays at once (it once took 4 GB, most of it in folded constants)."""
    proc, seconds = _run_limited(["grad", "sum(outer(x,x)^2)", "--at", _vector(11_000)])
    _assert_refused(proc, "the gradient would need about 1.8 GiB of memory, over the budget of 1.25 GiB "
                          "(--max-memory)")
    assert seconds < 30


def test_hessian_of_a_huge_outer_product_is_refused():
    proc, seconds = _run_limited(["hess", "sum(outer(x,x))", "--at", _vector(11_000)])
    _assert_refused(proc, "the Hessian would need about", "GiB of memory, over the budget of 1.25 GiB",
                    "use hvp with a tangent instead")
    assert seconds < 30


def test_a_hessian_through_broadcast_views_is_not_refused():
    """A broadcast is a view: counted as a copy, hess 'sum(outer(x,x))' at 3,000
    (a 72 MB result, about 300 MB at its peak) was estimated at 201 GiB and refused."""
    proc, _ = _run_limited(["hess", "sum(outer(x,x))", "--at", _vector(3_000), "--max-memory", "600M", "-q"],
                           timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {"2.0"}


def test_a_5000_by_5000_jacobian_is_refused_over_the_budget():
    proc, seconds = _run_limited(["jac", "sin(x)", "--at", _vector(5_000), "--max-memory", "150M"])
    _assert_refused(proc, "the Jacobian would need about 191 MiB of memory, over the budget of 150 MiB")
    assert seconds < 30


@pytest.mark.parametrize("args,phrase", [
    (["grad", "sum(x^2)", "--at", "x=[1,2]", "--order", "65"], "its tensor has 65 axes, and NumPy arrays have "
                                                               "at most 64: lower the order"),
    (["grad", "sin(x)", "--at", "x=1", "--order", "1001"], "orders up to 1,000 are answered, not 1,001"),
    (["grad", "sin(x)", "--at", "x=1", "--order", "10" + "0" * 30], "orders up to 1,000 are answered, not 1"),
    (["grad", "sum(x^3)", "--at", "x=[1,2]", "--order", "100000"], "orders up to 1,000 are answered"),
    (["grad", "sum(x^3)", "--at", "x=[1,2,3,4,5,6,7,8,9,10]", "--order", "60"], "would need about 9.2e+18 TiB of memory, over the budget"),
])
def test_orders_beyond_the_limits_are_refused(args, phrase):
    proc, seconds = _run_limited(args)
    _assert_refused(proc, phrase)
    assert seconds < 20


# ---------------------------------------------------------------- under the budget


def test_a_request_just_under_the_budget_runs_and_is_right():
    """grad of (sum x^2)^2 = 4 x sum(x^2); at 2,000 entries its plan's estimate is
    61.1 MiB: 62M runs, 60M is refused."""
    x = (np.arange(2000) % 7).astype(float)
    args = ["grad", "sum(outer(x,x)^2)", "--at", _vector(2000), "--json"]
    ok = CliRunner().invoke(cli, args + ["--max-memory", "62M"])
    assert ok.exit_code == 0, ok.output
    np.testing.assert_allclose(json.loads(ok.stdout)["gradient"]["x"], 4 * x * np.sum(x * x), rtol=1e-12)
    refused = CliRunner().invoke(cli, args + ["--max-memory", "60M"])
    assert refused.exit_code == 2
    assert refused.stderr == ("error: the gradient would need about 61.1 MiB of memory, over the budget of "
                              "60 MiB (--max-memory): give a larger --max-memory, or smaller arrays\n")


def _advised_chunk(message: str) -> int:
    return int(message.split("(--chunk ")[1].split(")")[0])


def test_a_batch_over_the_budget_says_how_many_points_may_fit():
    """The advice scales the estimate down in proportion (fixed costs make it a
    little optimistic): following it twice at most gives a batch that runs."""
    f = diffcli.compile("sum(x^2 * y)", max_memory="20M")
    rng = np.random.default_rng(3)
    x, y = rng.uniform(size=(2000, 50)), rng.uniform(size=2000)
    n = 2000
    for _ in range(3):
        try:
            h = f.hessian(x=x[:n], y=y[:n], batch_ndim=1)
            break
        except diffcli.BudgetError as e:
            assert re.search(r"the Hessian would need about [\d.]+ MiB of memory, over the budget of 20 MiB "
                             r"\(--max-memory\): evaluate at most [\d,]+ points at a time \(--chunk \d+\)$", str(e))
            assert _advised_chunk(str(e)) < n
            n = _advised_chunk(str(e))
    else:
        pytest.fail("the advised batch size never fitted")
    assert 100 < n < 2000
    np.testing.assert_allclose(h["x"]["x"][3], 2 * y[3] * np.eye(50))
    np.testing.assert_allclose(h["x"]["y"][3], 2 * x[3])


def test_points_chunks_over_the_budget_are_refused_with_the_chunk_that_fits(tmp_path):
    points = tmp_path / "p.ndjson"
    points.write_text("".join(json.dumps({"x": [i, 1.0, 2.0] * 4}) + "\n" for i in range(3000)))
    args = ["hess", "sum(x^3)", "--points", str(points), "--nl", "--max-memory", "1M"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "evaluate at most" in refused.stderr
    chunk = _advised_chunk(refused.stderr)
    for _ in range(2):
        ok = CliRunner().invoke(cli, args + ["--chunk", str(chunk)])
        if ok.exit_code != 2:
            break
        chunk = _advised_chunk(ok.stderr)
    assert ok.exit_code == 0, ok.stderr
    rows = ok.stdout.splitlines()
    assert len(rows) == 3000
    np.testing.assert_allclose(np.diag(json.loads(rows[5])["hessian"]["x"]["x"]), 6 * np.array([5, 1, 2] * 4))


def test_a_derivative_graph_past_its_node_budget_is_refused_and_forgotten():
    """1 MiB allows 1,024 nodes; the gradient of 300 distinct terms needs more.
    The half-built graph is dropped, and the function still works."""
    f = diffcli.compile(" + ".join(f"sin({i} * x)" for i in range(1, 301)), max_memory="1M")
    with pytest.raises(diffcli.BudgetError, match="the derivative graph grew past 1,024 nodes while being built"):
        f.grad(x=0.5)
    assert f._bindings == {}
    assert float(f.eval(x=0.0).value) == 0.0


def test_plot_takes_the_budget_too():
    """Taylor propagation holds order + 1 coefficients of each sample's values."""
    result = CliRunner().invoke(cli, ["plot", "tan(exp(x))", "--over", "x=0:1", "--order", "8", "--format", "csv",
                                      "--max-memory", "1M", "--points", "100000"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "the derivatives up to order 8 would need about 6.87 MiB of memory, over the budget of 1 MiB" \
        in result.stderr


# ---------------------------------------------------------------- the estimate against the real peak


def _measured(function, method, args, kwargs, monkeypatch) -> tuple[int, int]:
    """(the largest estimate the request was checked against, less the arrays the
    caller already holds; the peak of new allocations tracemalloc saw)."""
    getattr(function, method)(*args, **kwargs)  # graph, plan and cached seeds built first
    estimates = []
    check = api.Function._within_budget

    def spy(self, estimate, request, batch):
        estimates.append(estimate)
        return check(self, estimate, request, batch)
    monkeypatch.setattr(api.Function, "_within_budget", spy)
    gc.collect()
    tracemalloc.start()
    try:
        result = getattr(function, method)(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    given = sum(np.asarray(v).nbytes for v in kwargs.values() if isinstance(v, np.ndarray))
    return max(estimates) - given, peak


RNG = np.random.default_rng(0)
PLANS = [
    ("sum(outer(x,x)^2)", "grad", (), {"x": RNG.uniform(size=1500)}),
    ("sin(x)*exp(x)", "jacobian", (), {"x": RNG.uniform(size=1500)}),  # a diagonal seed
    ("sum(x^2*sin(x))", "hessian", (), {"x": RNG.uniform(size=600)}),
    ("sum(outer(x,x)^2)", "hessian", (), {"x": RNG.uniform(size=80)}),
    ("sum(outer(x,x))", "hessian", (), {"x": RNG.uniform(size=600)}),  # broadcast views, never dense
    ("[sum(x^3), x[0]*x[1]^2]", "derivative", (3,), {"x": RNG.uniform(size=40)}),
    ("sin(x)*y + exp(x*y)", "grad", (), {"x": RNG.uniform(size=400_000), "y": RNG.uniform(size=400_000),
                                         "batch_ndim": 1}),
    ("sin(x)*y + exp(x*y)", "eval", (), {"x": RNG.uniform(size=400_000), "y": RNG.uniform(size=400_000),
                                         "batch_ndim": 1}),
    ("sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)", "grad", (),
     {"x": RNG.uniform(size=(5000, 100)), "batch_ndim": 1}),
]


@pytest.mark.parametrize("expression,method,args,kwargs", PLANS, ids=[f"{p[1]} {p[0]}" for p in PLANS])
def test_the_estimate_is_within_a_factor_two_of_the_measured_peak(expression, method, args, kwargs, monkeypatch):
    estimate, peak = _measured(diffcli.compile(expression), method, args, kwargs, monkeypatch)
    assert peak > 1 << 20  # enough to measure
    assert 0.5 <= estimate / peak <= 2.0, (estimate, peak)


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("text,size", [("2G", 2 << 30), ("500M", 500 << 20), ("1.5GiB", 3 << 29),
                                       ("2gb", 2 << 30), ("1T", 1 << 40), ("1048576", 1 << 20),
                                       (" 3 M ", 3 << 20), ("9" * 40 + "T", 1 << 70)])
def test_sizes_parse(text, size):
    assert budget.parse_size(text) == size


@pytest.mark.parametrize("text,message", [
    ("abc", "a memory size is a number with an optional unit K, M, G or T (like 2G or 500M), not 'abc'"),
    ("-5M", "not '-5M'"), ("1e3G", "not '1e3G'"), ("2X", "not '2X'"), ("", "not ''"),
    ("0", "a memory budget of 0 B is too small to run anything: give at least 1M"),
    ("1K", "a memory budget of 1 KiB is too small"),
])
def test_bad_sizes_are_clean_usage_errors(text, message):
    with pytest.raises(diffcli.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        budget.parse_size(text)
    result = CliRunner().invoke(cli, ["grad", "x^2", "--at", "x=1", "--max-memory", text])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert "Invalid value for '--max-memory': " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", [0, -1, 1.5e9, True, [1]])
def test_bad_max_memory_in_the_api(value):
    with pytest.raises(diffcli.UsageError, match="max_memory must be at least 1 MiB"):
        diffcli.compile("x", max_memory=value)


def test_max_memory_in_the_api():
    assert diffcli.compile("x", max_memory="2G").max_memory == 2 << 30
    assert diffcli.compile("x", max_memory=3 << 20).max_memory == 3 << 20
    assert diffcli.compile("x").max_memory == budget.default_budget()
    assert issubclass(diffcli.BudgetError, diffcli.UsageError)
