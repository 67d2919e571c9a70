"""diffcli benchmarks: medians and ratios against baselines run in the same process.

    python bench/run.py                 # every task (several minutes)
    python bench/run.py t1 t3a t6       # some tasks
    python bench/run.py t2 --rss        # also peak RSS for 10^7 streamed points (about a minute)
    python bench/run.py --rss 1e8       # only that, for 10^8 points (minutes)
    python bench/run.py phases          # read / evaluate / write per format, 10^6 points

Each task prints a table: tool, median time, ratio to the hand-written NumPy
floor measured in the same run, and the largest error against that floor,
relative to the floor's largest magnitude. Peers (torch, jax, HIPS autograd,
sympy, numexpr) run when installed (`pip install '.[bench]'`); a missing one is
reported, and the diffcli and floor rows run regardless. Thread count:
DIFFCLI_THREADS (default: every core).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffcli  # noqa: E402
import peers  # noqa: E402

T1 = "sin(x) * exp(-x^2 / 2) + log(1 + x^2) + tanh(x)^2"
T2 = "x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2)"
ROSENBROCK = "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)"


# ---------------------------------------------------------------- harness

def median_time(fn, repeat=7, min_seconds=0.02):
    """Median seconds per call; fast calls are looped so each sample lasts min_seconds."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    loops = max(1, int(min_seconds / max(once, 1e-9)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples)


def max_rel_err(got, want):
    got = [np.asarray(g, dtype=float) for g in (got if isinstance(got, (list, tuple)) else [got])]
    want = [np.asarray(w, dtype=float) for w in (want if isinstance(want, (list, tuple)) else [want])]
    scale = max(float(np.max(np.abs(w))) for w in want) or 1.0
    return max(float(np.max(np.abs(g.reshape(w.shape) - w))) for g, w in zip(got, want)) / scale


class Table:
    def __init__(self, title):
        self.title = title
        self.rows = []
        self.floor = None
        self.reference = None

    def floor_row(self, name, fn):
        self.floor = median_time(fn)
        self.reference = fn()
        self.rows.append((name, self.floor, 0.0, ""))

    def row(self, name, fn, check=None):
        """check(result) -> comparable with the floor's result; None skips the error column."""
        try:
            seconds = median_time(fn)
            result = fn()
            error = max_rel_err(check(result), self.reference) if check else None
            self.rows.append((name, seconds, error, ""))
        except Exception as e:  # noqa: BLE001 - a peer failing is a row, not a crash
            self.rows.append((name, None, None, f"failed: {type(e).__name__}: {str(e)[:60]}"))

    def missing(self, name, why):
        self.rows.append((name, None, None, why))

    def print(self):
        print(f"\n{self.title}")
        print(f"  {'tool':<46} {'median':>10} {'ratio':>8} {'max rel err':>12}")
        for name, seconds, error, note in self.rows:
            if seconds is None:
                print(f"  {name:<46} {note}")
                continue
            err = "-" if error is None else f"{error:.1e}"
            print(f"  {name:<46} {_fmt(seconds):>10} {seconds / self.floor:>7.2f}x {err:>12}")


def _fmt(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


# ---------------------------------------------------------------- T1, T2: value + gradient over 10^6 points

def t1_numpy(x):
    s, e, t = np.sin(x), np.exp(-x * x / 2), np.tanh(x)
    value = s * e + np.log(1 + x * x) + t * t
    return value, np.cos(x) * e - x * s * e + 2 * x / (1 + x * x) + 2 * t * (1 - t * t)


def t2_numpy(x, y, z):
    r = np.sqrt(x * x + y * y + z * z)
    ez, lx, sy = np.exp(-z), np.log(x), np.sin(y)
    value = x * y + sy * z + lx * ez + r
    return value, y + ez / x + x / r, x + np.cos(y) * z + y / r, sy - lx * ez + z / r


def _plain(expression, first_call):
    """A function whose plans run the plain NumPy steps: a plan decides on its
    first big batch, so that call runs with DIFFCLI_NATIVE=0."""
    f = diffcli.compile(expression)
    mode = os.environ.get("DIFFCLI_NATIVE")
    os.environ["DIFFCLI_NATIVE"] = "0"
    try:
        first_call(f)
    finally:
        if mode is None:
            del os.environ["DIFFCLI_NATIVE"]
        else:
            os.environ["DIFFCLI_NATIVE"] = mode
    return f


def task_t1():
    x = np.random.default_rng(0).uniform(-3, 3, 1_000_000)
    table = Table(f"T1  value + derivative of {T1}, N=10^6")
    table.floor_row("hand-written NumPy (floor, 1 thread)", lambda: t1_numpy(x))
    f = diffcli.compile(T1)
    table.row("diffcli API grad (batch)", lambda: f.grad(x=x, batch_ndim=1),
              lambda r: [r.value, r["x"]])
    plain = _plain(T1, lambda g: g.grad(x=x, batch_ndim=1))
    table.row("diffcli, plain NumPy steps (DIFFCLI_NATIVE=0)", lambda: plain.grad(x=x, batch_ndim=1),
              lambda r: [r.value, r["x"]])
    _peer_elementwise(table, peers.t1, (x,), 1)
    ne = peers.load("numexpr")
    if ne is None:
        table.missing("numexpr", "not installed")
    else:
        table.row("numexpr (hand-written derivative)", lambda: (
            ne.evaluate("sin(x)*exp(-x*x/2) + log(1+x*x) + tanh(x)**2", local_dict={"x": x}),
            ne.evaluate("cos(x)*exp(-x*x/2) - x*sin(x)*exp(-x*x/2) + 2*x/(1+x*x) + 2*tanh(x)*(1-tanh(x)**2)",
                        local_dict={"x": x})),
            lambda r: list(r))
    table.print()


def task_t2():
    rng = np.random.default_rng(0)
    n = 1_000_000
    x, y, z = rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    table = Table(f"T2  value + gradient of {T2}, N=10^6")
    table.floor_row("hand-written NumPy (floor, 1 thread)", lambda: t2_numpy(x, y, z))
    f = diffcli.compile(T2)
    table.row("diffcli API grad (batch)", lambda: f.grad({"x": x, "y": y, "z": z}, batch_ndim=1),
              lambda r: [r.value, r["x"], r["y"], r["z"]])
    plain = _plain(T2, lambda g: g.grad({"x": x, "y": y, "z": z}, batch_ndim=1))
    table.row("diffcli, plain NumPy steps (DIFFCLI_NATIVE=0)",
              lambda: plain.grad({"x": x, "y": y, "z": z}, batch_ndim=1),
              lambda r: [r.value, r["x"], r["y"], r["z"]])
    _peer_elementwise(table, peers.t2, (x, y, z), 3)
    table.print()


def _peer_elementwise(table, make, args, nargs):
    """JAX jit(vmap), torch eager, HIPS autograd, sympy lambdify(cse): value and
    the derivative with respect to every argument, elementwise."""
    jax = peers.jax()
    if jax is None:
        table.missing("JAX", "not installed")
    else:
        jnp = jax.numpy
        f = make(jnp)
        vg = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=tuple(range(nargs)))))
        jargs = [jnp.asarray(a) for a in args]
        table.row("JAX jit(vmap(value_and_grad))", lambda: jax.block_until_ready(vg(*jargs)),
                  lambda r: [r[0], *r[1]])
    torch = peers.torch()
    if torch is None:
        table.missing("torch", "not installed")
    else:
        f = make(torch)
        targs = [torch.from_numpy(a) for a in args]

        def run_torch():
            leaves = [a.clone().requires_grad_(True) for a in targs]
            value = f(*leaves)
            grads = torch.autograd.grad(value.sum(), leaves)
            return [value.detach(), *grads]
        table.row(f"torch eager ({torch.get_num_threads()} threads)", run_torch,
                  lambda r: [t.numpy() for t in r])
    autograd = peers.load("autograd")
    if autograd is None:
        table.missing("HIPS autograd", "not installed")
    else:
        anp = autograd_numpy()
        f = make(anp)
        grads = [autograd.elementwise_grad(f, i) for i in range(nargs)]
        table.row("HIPS autograd (elementwise_grad)", lambda: [f(*args)] + [g(*args) for g in grads],
                  lambda r: r)
    sympy = peers.load("sympy")
    if sympy is None:
        table.missing("sympy", "not installed")
    else:
        symbols = sympy.symbols("x y z")[:nargs]
        expr = make(sympy)(*symbols) if nargs > 1 else _sympy_t1(sympy, symbols[0])
        exprs = [expr] + [sympy.diff(expr, s) for s in symbols]
        fn = sympy.lambdify(symbols, exprs, modules="numpy", cse=True)
        table.row("sympy lambdify(cse)", lambda: fn(*args), lambda r: list(r))


def _sympy_t1(sympy, x):
    return sympy.sin(x) * sympy.exp(-x * x / 2) + sympy.log(1 + x * x) + sympy.tanh(x) ** 2


def autograd_numpy():
    import autograd.numpy as anp
    return anp


# ---------------------------------------------------------------- T3: Rosenbrock gradient

def rosenbrock_grad_numpy(x):
    d = x[..., 1:] - x[..., :-1] ** 2
    g = np.zeros_like(x)
    g[..., :-1] = -400 * x[..., :-1] * d - 2 * (1 - x[..., :-1])
    g[..., 1:] += 200 * d
    return g


def task_t3a():
    x = np.random.default_rng(1).uniform(-1, 1, 1000)
    table = Table("T3a Rosenbrock gradient, n=1000, one point")
    table.floor_row("hand-written NumPy (floor)", lambda: rosenbrock_grad_numpy(x))
    f = diffcli.compile(ROSENBROCK)
    table.row("diffcli API grad (value too)", lambda: f.grad(x=x), lambda r: r["x"])
    table.row("diffcli API grad(value=False)", lambda: f.grad(x=x, value=False), lambda r: r["x"])
    _peer_gradients(table, x, batched=False)
    table.print()


def task_t3b():
    x = np.random.default_rng(2).uniform(-1, 1, (10_000, 100))
    table = Table("T3b Rosenbrock gradient, n=100, B=10,000 points")
    table.floor_row("hand-written NumPy (floor, 1 thread)", lambda: rosenbrock_grad_numpy(x))
    f = diffcli.compile(ROSENBROCK)
    table.row("diffcli API grad (batch, value too)", lambda: f.grad(x=x, batch_ndim=1), lambda r: r["x"])
    # The floor and JAX's grad compute the gradient alone; so does value=False.
    table.row("diffcli API grad(value=False)", lambda: f.grad(x=x, batch_ndim=1, value=False), lambda r: r["x"])
    plain = _plain(ROSENBROCK, lambda g: g.grad(x=x, batch_ndim=1, value=False))
    table.row("diffcli grad(value=False), plain NumPy steps", lambda: plain.grad(x=x, batch_ndim=1, value=False),
              lambda r: r["x"])
    _peer_gradients(table, x, batched=True)
    table.print()


def _peer_gradients(table, x, batched):
    jax = peers.jax()
    if jax is None:
        table.missing("JAX", "not installed")
    else:
        g = jax.grad(peers.rosenbrock(jax.numpy))
        g = jax.jit(jax.vmap(g) if batched else g)
        jx = jax.numpy.asarray(x)
        table.row("JAX jit" + ("(vmap(grad))" if batched else "(grad)"), lambda: jax.block_until_ready(g(jx)),
                  lambda r: np.asarray(r))
    torch = peers.torch()
    if torch is None:
        table.missing("torch", "not installed")
    else:
        f = peers.rosenbrock(torch)
        tx = torch.from_numpy(x)

        def run_torch():
            leaf = tx.clone().requires_grad_(True)
            return torch.autograd.grad(f(leaf).sum(), leaf)[0]
        table.row("torch eager", run_torch, lambda r: r.numpy())
    autograd = peers.load("autograd")
    if autograd is None:
        table.missing("HIPS autograd", "not installed")
    else:
        anp = autograd_numpy()
        f = peers.rosenbrock(anp)
        g = autograd.grad(lambda v: anp.sum(f(v)))
        table.row("HIPS autograd", lambda: g(x), lambda r: r)


# ---------------------------------------------------------------- T4: a full Jacobian

def task_t4():
    n = 500
    x = np.random.default_rng(3).uniform(-2, 2, n)
    table = Table("T4  full Jacobian of cumsum(sin(x)) * x, n=500")

    def floor():
        return np.tril(np.outer(x, np.cos(x))) + np.diag(np.cumsum(np.sin(x)))
    table.floor_row("hand-written NumPy (floor)", floor)
    f = diffcli.compile("cumsum(sin(x)) * x")
    table.row("diffcli API jacobian", lambda: f.jacobian(x=x), lambda r: r["x"])
    jax = peers.jax()
    if jax is None:
        table.missing("JAX", "not installed")
    else:
        jf = jax.jit(jax.jacfwd(lambda v: jax.numpy.cumsum(jax.numpy.sin(v)) * v))
        jx = jax.numpy.asarray(x)
        table.row("JAX jit(jacfwd)", lambda: jax.block_until_ready(jf(jx)), lambda r: np.asarray(r))
    torch = peers.torch()
    if torch is None:
        table.missing("torch", "not installed")
    else:
        tx = torch.from_numpy(x)

        def tf(v):
            return torch.cumsum(torch.sin(v), 0) * v
        table.row("torch.func.jacfwd", lambda: torch.func.jacfwd(tf)(tx), lambda r: r.numpy())
        table.row("torch.func.jacrev", lambda: torch.func.jacrev(tf)(tx), lambda r: r.numpy())
        table.row("torch.autograd.functional.jacobian", lambda: torch.autograd.functional.jacobian(tf, tx),
                  lambda r: r.numpy())
    autograd = peers.load("autograd")
    if autograd is None:
        table.missing("HIPS autograd", "not installed")
    else:
        anp = autograd_numpy()
        jf = autograd.jacobian(lambda v: anp.cumsum(anp.sin(v)) * v)
        table.row("HIPS autograd jacobian", lambda: jf(x), lambda r: r)
    table.print()


# ---------------------------------------------------------------- T5: a Hessian

def rosenbrock_hessian_numpy(x):
    n = len(x)
    h = np.zeros((n, n))
    i = np.arange(n - 1)
    h[i, i] = 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
    h[i + 1, i + 1] += 200
    h[i, i + 1] = h[i + 1, i] = -400 * x[:-1]
    return h


def task_t5():
    x = np.random.default_rng(4).uniform(-1, 1, 100)
    table = Table("T5  Hessian of Rosenbrock, n=100")
    table.floor_row("hand-written NumPy (floor)", lambda: rosenbrock_hessian_numpy(x))
    f = diffcli.compile(ROSENBROCK)
    table.row("diffcli API hessian", lambda: f.hessian(x=x), lambda r: r["x"]["x"])
    jax = peers.jax()
    if jax is None:
        table.missing("JAX", "not installed")
    else:
        hf = jax.jit(jax.hessian(peers.rosenbrock(jax.numpy)))
        jx = jax.numpy.asarray(x)
        table.row("JAX jit(hessian)", lambda: jax.block_until_ready(hf(jx)), lambda r: np.asarray(r))
    torch = peers.torch()
    if torch is None:
        table.missing("torch", "not installed")
    else:
        tf = peers.rosenbrock(torch)
        tx = torch.from_numpy(x)
        table.row("torch.autograd.functional.hessian(vectorize)",
                  lambda: torch.autograd.functional.hessian(tf, tx, vectorize=True), lambda r: r.numpy())
        table.row("torch.func.hessian", lambda: torch.func.hessian(tf)(tx), lambda r: r.numpy())
    autograd = peers.load("autograd")
    if autograd is None:
        table.missing("HIPS autograd", "not installed")
    else:
        anp = autograd_numpy()
        hf = autograd.hessian(peers.rosenbrock(anp))
        table.row("HIPS autograd hessian", lambda: hf(x), lambda r: r)
    table.print()


# ---------------------------------------------------------------- T6: start-up, whole processes

PEER_SCRIPTS = {
    "HIPS autograd": "import autograd.numpy as np\nfrom autograd import grad\n"
                     "print(grad(lambda x: np.cos(x) + np.sin(x))(2.0))",
    "sympy": "import sympy as s\nx = s.Symbol('x')\nprint(s.diff(s.cos(x) + s.sin(x), x).subs(x, 2).evalf())",
    "JAX": "import jax, jax.numpy as jnp\nprint(jax.grad(lambda x: jnp.cos(x) + jnp.sin(x))(2.0))",
    "torch": "import torch\nx = torch.tensor(2.0, requires_grad=True)\ny = torch.cos(x) + torch.sin(x)\n"
             "y.backward()\nprint(x.grad.item())",
}


def task_t6():
    def process(args):
        def run():
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
        return run

    _compile_bytecode()
    rounds = 15
    table = Table(f"T6  whole process: d/dx (cos x + sin x) at 2, printed (median of {rounds}, interleaved)")
    py = sys.executable
    arguments = ["grad", "cos(x) + sin(x)", "--at", "x=2"]
    # What the installed `diffcli` command runs (pip's console script), or the same from a checkout.
    script = Path(sys.executable).with_name("diffcli")
    command = [str(script)] if script.is_file() else \
        [py, "-c", "import sys; from diffcli.cli import main; sys.argv[0] = 'diffcli'; sys.exit(main())"]
    runs = {"python -c 'import numpy' (floor)": [py, "-c", "import numpy"],
            "python -c pass": [py, "-c", "pass"],
            "diffcli grad ... --json": command + arguments + ["--json"],
            "diffcli grad ... -q": command + arguments + ["-q"],
            "python -m diffcli grad ... --json": [py, "-m", "diffcli"] + arguments + ["--json"]}
    # Round robin, so that a slow spell of a shared machine falls on every row alike.
    times: dict[str, list[float]] = {label: [] for label in runs}
    for label, argv in runs.items():
        process(argv)()  # warm the file cache
    for _ in range(rounds):
        for label, argv in runs.items():
            start = time.perf_counter()
            process(argv)()
            times[label].append(time.perf_counter() - start)
    table.floor = statistics.median(times["python -c 'import numpy' (floor)"])
    for label in runs:
        table.rows.append((label, statistics.median(times[label]), None, ""))
    for name, script in PEER_SCRIPTS.items():
        module = {"HIPS autograd": "autograd", "JAX": "jax"}.get(name, name)
        if peers.load(module) is None:
            table.missing(name, "not installed")
            continue
        table.rows.append((name, statistics.median(_samples(process([py, "-c", script]), 5)), None, ""))
    table.print()


def _samples(fn, n):
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


# ---------------------------------------------------------------- T7, T8 and size scaling: parse + derivative

def nested(depth):
    """((((x+1)*2)+1)*2)... with a fixed point at x = -2, so the value stays finite."""
    return "(" * depth + "x" + "".join("+1)" if i % 2 == 0 else "*2)" for i in range(depth))


def task_t7():
    table = Table("T7  expression nested 5,000 levels: parse + value + derivative, in process")
    text = nested(5000)
    table.floor = median_time(lambda: diffcli.compile(text).grad(x=-2.0), repeat=5)
    table.rows.append(("diffcli compile + grad", table.floor, None, ""))
    table.rows.append(("  (target: 0.2 s)", 0.2, None, ""))
    # The machine parsed this text with lark in about 0.14 s: lark's time
    # here says how this machine compares (the target scales with it).
    from diffcli.language.parse import lark_parser
    lark = median_time(lambda: lark_parser().parse(text), repeat=5)
    table.rows.append(("  lark's LALR parse alone (issue's machine: 0.14 s)", lark, None, ""))
    torch = peers.torch()
    if torch is None:
        table.missing("torch eager, built in code", "not installed")
    else:
        def build_torch():
            x = torch.tensor(-2.0, requires_grad=True)
            v = x
            for i in range(5000):
                v = v + 1 if i % 2 == 0 else v * 2
            return torch.autograd.grad(v, x)[0]
        table.row("torch eager, built in code", build_torch)
    table.missing("sympy", "cannot parse it (Python's parser stops near 100 levels)")
    table.print()
    print("  depth scaling (diffcli compile + grad):")
    for depth in (1000, 10_000, 100_000):
        seconds = median_time(lambda d=depth: diffcli.compile(nested(d)).grad(x=-2.0), repeat=3)
        print(f"    depth {depth:>7,}: {_fmt(seconds):>10}  ({seconds / depth * 1e6:.1f} us per level)")


def t8_text(terms, seed=0):
    rng = random.Random(seed)
    return " + ".join(f"{rng.uniform(-2, 2)!r}*sin({rng.uniform(-2, 2)!r}*x + {rng.uniform(-2, 2)!r})"
                      for _ in range(terms))


def task_t8():
    text = t8_text(10_000)
    table = Table(f"T8  sum of 10,000 terms c*sin(a*x+b) ({len(text) / 1e3:.0f} kB): parse + gradient")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        table.floor = median_time(lambda: ast.parse(text), repeat=3)
    finally:
        sys.setrecursionlimit(limit)
    table.rows.append(("ast.parse alone (floor, recursion limit raised)", table.floor, None, ""))
    table.rows.append(("diffcli compile + grad, one point", median_time(
        lambda: diffcli.compile(text).grad(x=0.3), repeat=3), None, ""))
    table.rows.append(("  (target: 2 s where ast.parse takes 0.27 s: 7.4x)", 2.0, None, ""))
    table.missing("sympy", "not run: about 95 s before the first value on this machine class")
    table.print()

    # At 10,000 points: against NumPy looping over the terms.
    rng = random.Random(0)
    coefficients = np.array([[rng.uniform(-2, 2) for _ in range(3)] for _ in range(10_000)])
    xs = np.random.default_rng(5).uniform(-1, 1, 10_000)

    def numpy_floor():
        value, slope = np.zeros_like(xs), np.zeros_like(xs)
        for c, a, b in coefficients:
            u = a * xs + b
            value += c * np.sin(u)
            slope += c * a * np.cos(u)
        return value, slope
    points = Table("T8b the same, value + gradient at 10,000 points")
    points.floor_row("NumPy looping over the terms (floor)", numpy_floor)
    f = diffcli.compile(text)
    points.row("diffcli API grad (batch)", lambda: f.grad(x=xs, batch_ndim=1), lambda r: [r.value, r["x"]])
    points.print()


def task_scaling():
    print("\nParse + gradient time against expression size (flat sums of c*sin(a*x+b))")
    for terms in (15, 150, 1500, 15_000):
        text = t8_text(terms, seed=terms)
        seconds = median_time(lambda t=text: diffcli.compile(t).grad(x=0.3), repeat=3)
        print(f"  {len(text):>10,} characters: {_fmt(seconds):>10}  ({seconds / len(text) * 1e6:.2f} us per character)")


# ---------------------------------------------------------------- pipeline: CSV in, CSV out

NUMPY_SCRIPT = """
import sys, numpy as np
x, y, z = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1, unpack=True)
r = np.sqrt(x*x + y*y + z*z); ez = np.exp(-z); lx = np.log(x); sy = np.sin(y)
out = np.column_stack([x*y + sy*z + lx*ez + r, y + ez/x + x/r, x + np.cos(y)*z + y/r, sy - lx*ez + z/r])
np.savetxt(sys.argv[2], out, delimiter=",", header="value,d/dx,d/dy,d/dz", comments="", fmt="%.17g")
"""


def write_points_csv(path, n, seed=0):
    rng = np.random.default_rng(seed)
    data = np.column_stack([rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)])
    with open(path, "w") as f:
        f.write("x,y,z\n")
        for start in range(0, n, 100_000):
            f.write("\n".join(",".join(map(repr, row)) for row in data[start:start + 100_000].tolist()) + "\n")


# The ten-line scripts a user would write instead of diffcli (issue 15): read the
# points with a dataframe library, value and gradient of T2 by hand in NumPy, write.
_T2_BY_HAND = """
r = np.sqrt(x*x + y*y + z*z); ez = np.exp(-z); lx = np.log(x); sy = np.sin(y)
out = {"value": x*y + sy*z + lx*ez + r, "d/dx": y + ez/x + x/r, "d/dy": x + np.cos(y)*z + y/r,
       "d/dz": sy - lx*ez + z/r}
"""
POLARS_SCRIPT = """
import sys, numpy as np, polars as pl
src, dst = sys.argv[1], sys.argv[2]
df = pl.read_parquet(src) if src.endswith(".parquet") else pl.read_csv(src)
x, y, z = (df[c].to_numpy() for c in "xyz")
""" + _T2_BY_HAND + """
(pl.DataFrame(out).write_parquet if dst.endswith(".parquet") else pl.DataFrame(out).write_csv)(dst)
"""
PYARROW_SCRIPT = """
import sys, numpy as np, pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
src, dst = sys.argv[1], sys.argv[2]
t = pq.read_table(src) if src.endswith(".parquet") else pc.read_csv(src)
x, y, z = (t.column(c).to_numpy() for c in "xyz")
""" + _T2_BY_HAND + """
(pq.write_table if dst.endswith(".parquet") else pc.write_csv)(pa.table(out), dst)
"""


POLARS_NDJSON_SCRIPT = """
import sys, numpy as np, polars as pl
df = pl.read_ndjson(sys.argv[1])
x, y, z = (df[c].to_numpy() for c in "xyz")
""" + _T2_BY_HAND + """
pl.DataFrame(out).write_ndjson(sys.argv[2])
"""


def _alternating_medians(runs: dict, rounds: int = 3) -> dict:
    """Each process once to warm the caches, then rounds of all of them in turn
    (so a busy spell on the machine hits every row alike); the median per row."""
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _compile_bytecode():
    """As installed: bytecode compiled once (pip does this; a checkout with
    PYTHONDONTWRITEBYTECODE would recompile diffcli at every start, 0.16 s)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "diffcli")], check=True,
                   stdout=subprocess.DEVNULL)


def task_pipeline():
    n = 1_000_000
    _compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        points, parquet = os.path.join(tmp, "p.csv"), os.path.join(tmp, "p.parquet")
        write_points_csv(points, n)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        scripts = {}
        for name, text in [("numpy", NUMPY_SCRIPT), ("polars", POLARS_SCRIPT), ("pyarrow", PYARROW_SCRIPT)]:
            scripts[name] = os.path.join(tmp, f"{name}_script.py")  # not numpy.py: it would shadow numpy
            Path(scripts[name]).write_text(text)
        have = {name: peers.load(name) is not None for name in ("polars", "pyarrow")}
        if have["pyarrow"]:
            import pyarrow.csv
            import pyarrow.parquet

            pyarrow.parquet.write_table(pyarrow.csv.read_csv(points), parquet)

        def script(name, src, dst):
            return lambda: subprocess.run([sys.executable, scripts[name], src, os.path.join(tmp, dst)], check=True,
                                          env=env)

        def diffcli_run(src, dst, fmt):
            def run():
                with open(src) as stdin, open(os.path.join(tmp, dst), "w") as stdout:
                    subprocess.run([sys.executable, "-m", "diffcli", "grad", T2, "--points", "-", "--in", fmt,
                                    "--format", fmt], stdin=stdin, stdout=stdout, check=True, env=env)
            return run

        csv_runs = {"NumPy script: loadtxt + hand-written + savetxt": script("numpy", points, "numpy.csv")}
        if have["polars"]:
            csv_runs["polars script: read_csv, NumPy, write_csv"] = script("polars", points, "polars.csv")
        if have["pyarrow"]:
            csv_runs["pyarrow script: read_csv, NumPy, write_csv"] = script("pyarrow", points,
                                                                                      "pyarrow.csv")
        csv_runs["diffcli grad --points - --in csv --format csv"] = diffcli_run(points, "ours.csv", "csv")
        _pipeline_table(f"Pipeline: {n:,} points, CSV in -> CSV out (whole processes, alternating, median of 3)",
                        _alternating_medians(csv_runs), n, os.path.join(tmp, "ours.csv"), "csv",
                        os.path.join(tmp, "numpy.csv"))
        if have["pyarrow"]:
            parquet_runs = {}
            if have["polars"]:
                parquet_runs["polars script: Parquet in and out"] = script("polars", parquet, "polars.parquet")
            parquet_runs["pyarrow script: Parquet in and out"] = script("pyarrow", parquet, "pyarrow.parquet")
            parquet_runs["diffcli grad --in parquet --format parquet"] = diffcli_run(parquet, "ours.parquet",
                                                                                    "parquet")
            _pipeline_table(f"Pipeline: {n:,} points, Parquet in -> Parquet out (whole processes, alternating, "
                            "median of 3)", _alternating_medians(parquet_runs), n, os.path.join(tmp, "ours.parquet"),
                            "parquet", os.path.join(tmp, "numpy.csv"))


def task_pipeline_ndjson():
    """NDJSON in -> NDJSON out for 10^6 T2 points: diffcli against the polars script
    (read_ndjson, NumPy by hand, write_ndjson); whole processes, alternating, medians of 3."""
    n = 1_000_000
    if peers.load("polars") is None:
        print("Pipeline NDJSON: polars is not installed (pip install '.[bench]')")
        return
    with tempfile.TemporaryDirectory() as tmp:
        points, ndjson = os.path.join(tmp, "p.csv"), os.path.join(tmp, "p.ndjson")
        write_points_csv(points, n)
        with open(ndjson, "w") as f:  # {"x": 0.77..., "y": ..., "z": ...}, repr's digits, as json.dumps writes
            data = np.loadtxt(points, delimiter=",", skiprows=1)
            for start in range(0, n, 100_000):
                f.write("".join('{"x": %r, "y": %r, "z": %r}\n' % tuple(row)
                                for row in data[start:start + 100_000].tolist()))
        script, reference = os.path.join(tmp, "polars_script.py"), os.path.join(tmp, "numpy_script.py")
        Path(script).write_text(POLARS_NDJSON_SCRIPT)
        Path(reference).write_text(NUMPY_SCRIPT)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, reference, points, os.path.join(tmp, "numpy.csv")], check=True, env=env)

        def ours():
            with open(ndjson) as stdin, open(os.path.join(tmp, "ours.ndjson"), "w") as stdout:
                subprocess.run([sys.executable, "-m", "diffcli", "grad", T2, "--points", "-", "--in", "ndjson",
                                "--format", "ndjson"], stdin=stdin, stdout=stdout, check=True, env=env)
        runs = {"polars script: read_ndjson, NumPy, write_ndjson":
                lambda: subprocess.run([sys.executable, script, ndjson, os.path.join(tmp, "polars.ndjson")],
                                       check=True, env=env),
                "diffcli grad --points - --in ndjson --format ndjson": ours}
        _pipeline_table(f"Pipeline: {n:,} points, NDJSON in -> NDJSON out (whole processes, alternating, "
                        "median of 3)", _alternating_medians(runs), n, os.path.join(tmp, "ours.ndjson"), "ndjson",
                        os.path.join(tmp, "numpy.csv"), target=1.5)


def _pipeline_table(title, medians, n, ours, fmt, reference, target=1.0):
    names = list(medians)
    table = Table(title)
    table.floor = medians[names[0]]
    if fmt == "csv":
        got = np.loadtxt(ours, delimiter=",", skiprows=1)
    elif fmt == "ndjson":
        records = [json.loads(line) for line in Path(ours).read_text().splitlines()]
        got = np.array([[r["value"], *r["gradient"].values()] for r in records])
    else:
        import pyarrow.parquet

        got = np.column_stack([c.to_numpy() for c in pyarrow.parquet.read_table(ours).columns])
    error = max_rel_err(got, np.loadtxt(reference, delimiter=",", skiprows=1))
    for name in names:
        table.rows.append((name, medians[name], error if name.startswith("diffcli") else None, ""))
    table.print()
    mine = medians[names[-1]]
    scripts = {k: v for k, v in medians.items() if k.startswith(("polars", "pyarrow"))}
    if scripts:
        faster = min(scripts, key=scripts.get)
        print(f"  diffcli / the faster dataframe script ({faster.split(':')[0]}): {mine / scripts[faster]:.2f}x "
              f"(target <= {target}x); throughput {n / mine:,.0f} points/s")


def task_cheap():
    """value + gradient should cost a small constant multiple of the value alone."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    points = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}
    rosen = {"x": rng.uniform(-1, 1, (10_000, 100))}
    for title, expression, at in [("T2", T2, points), ("Rosenbrock n=100, B=10^4", ROSENBROCK, rosen)]:
        f = diffcli.compile(expression)
        table = Table(f"Cheap gradient, {title}: value + gradient against value alone")
        table.floor = median_time(lambda f=f, at=at: f.eval(at, batch_ndim=1))
        table.rows.append(("diffcli eval (value only)", table.floor, None, ""))
        table.rows.append(("diffcli grad (value + gradient)", median_time(lambda f=f, at=at: f.grad(at, batch_ndim=1)),
                           None, ""))
        table.print()


# The points for --rss: 10^6 random rows made once, then written again and again
# into the pipe, so that the producer costs little CPU beside diffcli.
_RSS_PRODUCER = """
import sys, numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(0)
block = min(n, 1_000_000)
data = np.column_stack([rng.uniform(0.5, 2, block), rng.uniform(-1, 1, block), rng.uniform(-1, 1, block)])
text = ("\\n".join(",".join(map(repr, row)) for row in data.tolist()) + "\\n").encode()
out = sys.stdout.buffer
out.write(b"x,y,z\\n")
for _ in range(n // block):
    out.write(text)
"""


def task_rss(n: int = 10_000_000):
    """grad of T2 over n points streamed CSV -> CSV from a pipe into a pipe: peak
    RSS, wall time and CPU time of the diffcli process alone."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    _compile_bytecode()
    # A wrapper process runs diffcli, so that its children's peak RSS and CPU time
    # are diffcli's alone; diffcli's output is counted, not kept.
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
               "lines = sum(block.count(b'\\n') for block in iter(lambda: p.stdout.read(1 << 20), b''))\n"
               "assert p.wait() == 0\n"
               "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(lines, u.ru_maxrss, u.ru_utime + u.ru_stime)\n")
    producer = subprocess.Popen([sys.executable, "-c", _RSS_PRODUCER, str(n)], stdout=subprocess.PIPE)
    start = time.perf_counter()
    measured = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "diffcli", "grad", T2,
                               "--points", "-", "--in", "csv", "--format", "csv"], stdin=producer.stdout,
                              capture_output=True, text=True, env=env, check=True)
    producer.stdout.close()
    producer.wait()
    elapsed = time.perf_counter() - start
    lines, peak_kib, cpu = measured.stdout.split()
    assert int(lines) == n + 1, lines
    print(f"\nStreaming {n:,} points through grad of T2 (CSV in and out, pipes): {elapsed:.1f} s, "
          f"{n / elapsed:,.0f} points/s, {n / float(cpu):,.0f} points per CPU second (diffcli used "
          f"{float(cpu):.1f} s of CPU on {os.cpu_count()} cores); peak RSS of diffcli "
          f"{int(peak_kib) / 1024:.0f} MB (target 400 MB)")


def task_phases(n: int = 1_000_000):
    """Where the time of a 10^6-point run goes, per format: reading the points
    into chunks, evaluating value and gradient of T2, writing the result (in
    process, after the imports; medians of 3). Start-up is T6's."""
    from diffcli import cli as cli_module
    from diffcli.io import points as points_module

    rng = np.random.default_rng(0)
    data = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}
    function = diffcli.compile(T2)
    print(f"\nWhere the time goes: {n:,} points of T2, value and gradient, per format (median of 3, in process)")
    print(f"  {'format':<8} {'read':>8} {'evaluate':>9} {'write':>8} {'total':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("csv", "tsv", "parquet", "arrow"):
            path = os.path.join(tmp, f"p.{fmt}")
            _write_points(path, data, fmt)
            chunks = list(_read_chunks(points_module, path, fmt, function))  # warm: imports, caches
            times = []
            for _ in range(3):
                start = time.perf_counter()
                chunks = list(_read_chunks(points_module, path, fmt, function))
                read = time.perf_counter() - start
                results = []
                start = time.perf_counter()
                for chunk in chunks:
                    results.append((function.compute("gradient", chunk.values, batch_ndim=1), chunk.kept))
                evaluate = time.perf_counter() - start
                with open(os.devnull, "w") as sink:
                    writer = _bench_writer(cli_module, fmt, sink)
                    start = time.perf_counter()
                    for result, kept in results:
                        writer.write(result, kept)
                    writer.close()
                    write = time.perf_counter() - start
                times.append((read, evaluate, write))
            read, evaluate, write = (statistics.median(t[i] for t in times) for i in range(3))
            print(f"  {fmt:<8} {_fmt(read):>8} {_fmt(evaluate):>9} {_fmt(write):>8} {_fmt(read + evaluate + write):>8}")


def _write_points(path: str, data: dict, fmt: str) -> None:
    import pyarrow as pa

    table = pa.table(data)
    if fmt in ("csv", "tsv"):
        columns = np.column_stack(list(data.values())).tolist()
        delimiter = "," if fmt == "csv" else "\t"
        with open(path, "w") as f:
            f.write(delimiter.join(data) + "\n")
            f.write("\n".join(delimiter.join(map(repr, row)) for row in columns) + "\n")
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def _read_chunks(points_module, path, fmt, function):
    stream = points_module.open_points(path)
    source = points_module.PointSource(stream, fmt, function.variables, {})
    yield from source.chunks()
    stream.close()


def _bench_writer(cli_module, fmt, sink):
    from diffcli.io import render

    if fmt in ("csv", "tsv"):
        return render.DelimitedWriter(sink, "," if fmt == "csv" else "\t")
    from diffcli.io.columnar import ArrowWriter

    return ArrowWriter(open(os.devnull, "wb"), "parquet" if fmt == "parquet" else "arrows",  # noqa: SIM115
                       lambda: __import__("contextlib").nullcontext())


def task_compile():
    """What the first big batch of an expression costs on a machine whose kernel
    cache is empty: probing the C library and compiling the loops, once."""
    from diffcli.engine import native

    rng = np.random.default_rng(0)
    values = {"x": rng.uniform(0.5, 2, 1_000_000), "y": rng.uniform(-1, 1, 1_000_000),
              "z": rng.uniform(-1, 1, 1_000_000)}
    rosenbrock = {"x": rng.uniform(-1, 1, (10_000, 100))}
    print("\nCompiled loops: the first batch in an empty kernel cache, less a later one (median of 3)")
    configured = os.environ.get("DIFFCLI_CACHE_DIR")
    for title, expression, at in [("T2", T2, values), ("T3b", ROSENBROCK, rosenbrock)]:
        costs = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["DIFFCLI_CACHE_DIR"], native._agreement = cache, None
                f = diffcli.compile(expression)
                start = time.perf_counter()
                f.grad(at, batch_ndim=1)
                first = time.perf_counter() - start
                start = time.perf_counter()
                f.grad(at, batch_ndim=1)
                costs.append(first - (time.perf_counter() - start))
        print(f"  {title}: {_fmt(statistics.median(costs))} (probe + compile, once per machine and expression shape)")
    if configured is None:
        del os.environ["DIFFCLI_CACHE_DIR"]
    else:
        os.environ["DIFFCLI_CACHE_DIR"] = configured


# ---------------------------------------------------------------- dask: partitioned files on a cluster

def _write_parquet_parts(directory, n, parts, seed=0):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for k, size in enumerate(np.diff(np.linspace(0, n, parts + 1).astype(int))):
        columns = {"x": rng.uniform(0.5, 2, size), "y": rng.uniform(-1, 1, size), "z": rng.uniform(-1, 1, size)}
        pq.write_table(pa.table(columns), os.path.join(directory, f"p{k:04d}.parquet"))


def task_dask():
    """10^7 T2 points in 8 Parquet files: the single-process pipeline (one
    process per file, in turn), and --engine dask with 1 and 2 worker
    processes. The cluster's start-up is shown apart from the run (the CLI pays
    both). Then the per-partition overhead: many small partitions."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        print("\nDask: not installed (pip install 'diffcli[dask]'); task skipped")
        return
    from diffcli.io import cluster

    n, parts = 10_000_000, 8
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "in")
        _write_parquet_parts(inputs, n, parts)
        files = sorted(os.path.join(inputs, f) for f in os.listdir(inputs))
        request = cluster.make_request(T2, "gradient")
        print(f"\nDask: {n:,} T2 points (value + gradient) in {parts} Parquet files, Parquet out; "
              f"{os.cpu_count()} cores")
        start = time.perf_counter()
        for i, path in enumerate(files):
            subprocess.run([sys.executable, "-m", "diffcli", "grad", T2, "--points", path, "--output",
                            os.path.join(tmp, f"single-{i}.parquet")], check=True, env=env)
        single = time.perf_counter() - start
        print(f"  single-process pipeline, {parts} processes in turn: {single:7.2f} s  "
              f"{n / single / 1e6:6.2f} M points/s")
        runs = []
        for round_ in range(2):  # the same task function as a worker's, in this process, no Dask
            start = time.perf_counter()
            for i, path in enumerate(files):
                cluster.write_partition(request, path, os.path.join(tmp, f"loop-{i}.parquet"), "parquet", "bench")
            runs.append(time.perf_counter() - start)
        looped = n / runs[-1]
        print(f"  single-process pipeline, one process over the {parts} files: {runs[-1]:7.2f} s  "
              f"{looped / 1e6:6.2f} M points/s (first round {runs[0]:.2f} s)")
        rates = {}
        for workers in (1, 2):
            start = time.perf_counter()
            with cluster.connect(workers=workers) as client:
                ready = time.perf_counter()
                runs = []
                for round_ in range(2):  # the first also warms each worker (imports, compile)
                    out = os.path.join(tmp, f"w{workers}-{round_}")
                    os.makedirs(out)
                    begin = time.perf_counter()
                    reports = cluster.run_files(client, request, files, cluster.output_names(files, out, "parquet"),
                                                "parquet")
                    runs.append(time.perf_counter() - begin)
                    assert sum(r.points for r in reports) == n and all(r.exit_status == 0 for r in reports)
                overhead = _partition_overhead(client, request, tmp, workers) if workers == 2 else None
            rates[workers] = n / runs[-1]
            print(f"  --engine dask --workers {workers}: cluster start {ready - start:5.2f} s, run {runs[0]:6.2f} s "
                  f"(first), {runs[1]:6.2f} s (second)  {rates[workers] / 1e6:6.2f} M points/s")
        print(f"  scaling --workers 2 / --workers 1: {rates[2] / rates[1]:.2f}x (target >= 1.6x); "
              f"--workers 2 / single process: {rates[2] / (n / single):.2f}x (8 processes), "
              f"{rates[2] / looped:.2f}x (one process) (target >= 1.3x)")
        for f in (0, parts - 1):  # the same bytes as the single-process pipeline
            ours = os.path.join(tmp, "w2-1", f"part-{f:05d}.parquet")
            assert Path(ours).read_bytes() == Path(os.path.join(tmp, f"single-{f}.parquet")).read_bytes()
        print(f"  per-partition overhead (2 workers): {overhead[0] * 1e3:.1f} ms per file task "
              f"({overhead[1]} files of 1,000 points), {overhead[2] * 1e3:.1f} ms per dask.dataframe partition "
              f"({overhead[3]} partitions of 1,000 rows); per-worker rate {rates[1] / 1e6:.2f} M points/s")


def _partition_overhead(client, request, tmp, workers):
    """Seconds per partition when partitions are tiny (1,000 points): file tasks,
    then the dataframe API, each time over the number of partitions and
    multiplied by the workers sharing them."""
    import dask.dataframe as dd
    import pandas as pd

    from diffcli.io import cluster

    small = os.path.join(tmp, "small")
    files_n = 200
    _write_parquet_parts(small, files_n * 1000, files_n, seed=1)
    files = sorted(os.path.join(small, f) for f in os.listdir(small))
    out = os.path.join(tmp, "small-out")
    os.makedirs(out)
    cluster.run_files(client, request, files[:4], cluster.output_names(files[:4], out, "parquet"), "parquet")
    start = time.perf_counter()
    cluster.run_files(client, request, files, cluster.output_names(files, out, "parquet"), "parquet")
    per_file = (time.perf_counter() - start) * workers / files_n
    frames_n = 400
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({c: rng.uniform(0.5, 2, frames_n * 1000) for c in "xyz"})
    points = dd.from_pandas(frame, npartitions=frames_n)
    client.compute(cluster.dataframe(points.partitions[:4], T2, "gradient")).result()
    start = time.perf_counter()
    client.compute(cluster.dataframe(points, T2, "gradient")).result()
    per_frame = (time.perf_counter() - start) * workers / frames_n
    return per_file, files_n, per_frame, frames_n


# ---------------------------------------------------------------- orders: Taylor propagation (issue 18)

def _in_subprocess(code: str, timeout: float = 60.0):
    """(seconds per call as the script prints it, its printed value) or a reason it has none."""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return None, f"over {timeout:.0f} s"
    if proc.returncode != 0:
        return None, f"failed: {proc.stderr.strip().splitlines()[-1][:60] if proc.stderr.strip() else proc.returncode}"
    seconds, value = proc.stdout.split()
    return float(seconds), float(value)


SYMPY_ORDER = """
import time, sympy as s
x = s.Symbol('x')
f = s.sin(x) * s.exp(-x**2 / 2) + s.log(1 + x**2) + s.tanh(x)**2
start = time.perf_counter()
value = s.diff(f, x, {n}).subs(x, 0.7).evalf(17)
print(time.perf_counter() - start, float(value))
"""
TORCH_ORDER = """
import time, torch
def f(x):
    return torch.sin(x) * torch.exp(-x**2 / 2) + torch.log(1 + x**2) + torch.tanh(x)**2
start = time.perf_counter()
x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
y = f(x)
for _ in range({n}):
    (y,) = torch.autograd.grad(y, x, create_graph=True)
print(time.perf_counter() - start, y.item())
"""


def task_orders():
    """d^N/dx^N of T1 at one point: Taylor propagation, the graph method
    (DIFFCLI_TAYLOR=0), SymPy and nested torch.autograd.grad (each where it
    finishes within 60 s; the peers once, in a subprocess)."""
    for n in (10, 20, 40):
        table = Table(f"ORDERS  d^{n}/dx^{n} of T1 at x = 0.7 (ratio to diffcli's Taylor propagation)")
        table.floor_row("diffcli (Taylor propagation)",
                        lambda: float(diffcli.compile(T1).derivative(n, x=0.7)["x"]))
        os.environ["DIFFCLI_TAYLOR"] = "0"
        try:
            start = time.perf_counter()
            got = float(diffcli.compile(T1, max_memory="4G").derivative(n, x=0.7)["x"])
            table.rows.append(("diffcli graph method (DIFFCLI_TAYLOR=0), once", time.perf_counter() - start,
                               max_rel_err(got, table.reference), ""))
        except diffcli.DiffcliError as e:
            table.missing("diffcli graph method (DIFFCLI_TAYLOR=0)", f"refused: {str(e)[:70]}")
        finally:
            del os.environ["DIFFCLI_TAYLOR"]
        for name, module, code in (("SymPy diff, subs, evalf (once)", "sympy", SYMPY_ORDER),
                                   ("torch nested autograd.grad (once)", "torch", TORCH_ORDER)):
            if peers.load(module) is None:
                table.missing(name, "not installed")
                continue
            seconds, value = _in_subprocess(code.format(n=n))
            if seconds is None:
                table.missing(name, value)
            else:
                table.rows.append((name, seconds, max_rel_err(value, table.reference), ""))
        table.print()


def task_tensor():
    """The full 3rd-order tensor of a 10-variable function: 220 Taylor directions
    combined by interpolation, against 10^3 nested reverse passes (the graph
    method, DIFFCLI_TAYLOR=0)."""
    expression = "sum(sin(x) * x[::-1]) + prod(x[:4]) * exp(sum(x) / 10) + norm(x)^3"
    x = np.linspace(0.2, 1.1, 10)
    table = Table("TENSOR  d^3/dx^3 of a function of 10 variables, one point (ratio to Taylor + interpolation)")
    from diffcli.api import requests

    chooses = requests.taylor_cheaper
    requests.taylor_cheaper = lambda n, order: True  # Taylor whatever the rule would choose
    try:
        f = diffcli.compile(expression)
        table.floor_row("diffcli Taylor, 220 directions + interpolation", lambda: f.derivative(3, x=x)["x"])
    finally:
        requests.taylor_cheaper = chooses
    os.environ["DIFFCLI_TAYLOR"] = "0"
    try:
        g = diffcli.compile(expression)
        table.row("diffcli nested reverse passes (DIFFCLI_TAYLOR=0)", lambda: g.derivative(3, x=x)["x"],
                  check=lambda r: r)
    finally:
        del os.environ["DIFFCLI_TAYLOR"]
    table.print()


def task_high_order():
    """Whole processes: grad tan(x) --order 100 and --order 1000 against T6's
    one-point start-up, interleaved, with each process's peak RSS."""
    import resource  # noqa: F401 - wait4's rusage

    _compile_bytecode()
    base = [sys.executable, "-m", "diffcli", "grad"]
    runs = {"T6 start-up: grad 'cos(x) + sin(x)' --at x=2": base + ["cos(x) + sin(x)", "--at", "x=2", "--json"],
            "grad 'tan(x)' --at x=0.7 --order 100": base + ["tan(x)", "--at", "x=0.7", "--order", "100", "--json"],
            "grad 'tan(x)' --at x=0.7 --order 1000": base + ["tan(x)", "--at", "x=0.7", "--order", "1000", "--json"]}
    times = {label: [] for label in runs}
    peaks = {label: 0 for label in runs}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(11):
        for label, argv in runs.items():
            start = time.perf_counter()
            child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            _, _, usage = os.wait4(child.pid, 0)
            times[label].append(time.perf_counter() - start)
            peaks[label] = max(peaks[label], usage.ru_maxrss // 1024)
    table = Table("HIGH ORDER  whole processes (median of 11, interleaved; ratio to T6's start-up)")
    first = next(iter(runs))
    table.floor = statistics.median(times[first])
    for label in runs:
        table.rows.append((f"{label}  [peak RSS {peaks[label]} MB]", statistics.median(times[label]), None, ""))
    table.print()


TASKS = {"t1": task_t1, "t2": task_t2, "t3a": task_t3a, "t3b": task_t3b, "t4": task_t4, "t5": task_t5,
         "t6": task_t6, "t7": task_t7, "t8": task_t8, "scaling": task_scaling, "cheap": task_cheap,
         "pipeline": task_pipeline, "pipeline-ndjson": task_pipeline_ndjson, "phases": task_phases,
         "compile": task_compile, "dask": task_dask, "orders": task_orders, "tensor": task_tensor,
         "high-order": task_high_order}


def main():
    # Every baseline runs with the allocator settings the diffcli command makes
    # in its process (glibc keeps freed memory instead of returning it), whatever the
    # order of tasks: without them NumPy's fresh arrays fault in new pages, and
    # the floors of T3b and T4 are up to 2x slower (that is, easier to beat).
    from diffcli.allocator import keep_freed_memory

    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"some of: {', '.join(TASKS)}")
    parser.add_argument("--rss", nargs="?", type=float, const=1e7, metavar="N",
                        help="peak RSS, time and CPU for N points streamed CSV -> CSV (default 10^7; 1e8 "
                             "takes minutes)")
    args = parser.parse_args()
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    # Steady state, as JAX's rows are after jit: a batch waits for its compiled
    # loops instead of running the plain steps while they build (task_compile
    # shows what the first build costs).
    os.environ.setdefault("DIFFCLI_NATIVE", "wait")
    print(f"diffcli {diffcli.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
          f"DIFFCLI_NATIVE={os.environ['DIFFCLI_NATIVE']}")
    for name in args.tasks or ([] if args.rss else TASKS):  # --rss alone: only that
        TASKS[name]()
    if args.rss:
        task_rss(int(args.rss))


if __name__ == "__main__":
    main()
