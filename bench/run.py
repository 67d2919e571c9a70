"""diffcli benchmarks: medians and ratios against baselines run in the same process.

    python bench/run.py                 # every task
    python bench/run.py pipeline t2     # some tasks
    python bench/run.py --rss           # also peak RSS for 10^7 streamed points (about a minute)

Each task prints a table: tool, median time, ratio to the hand-written NumPy
floor measured in the same run, and the maximum relative error against it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import diffcli  # noqa: E402

T2 = "x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2)"


def median_time(fn, repeat=5, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(title, rows, floor):
    print(f"\n{title}")
    print(f"  {'tool':<44} {'median':>10} {'ratio':>8} {'max rel err':>12}")
    for tool, seconds, error in rows:
        err = "-" if error is None else f"{error:.1e}"
        print(f"  {tool:<44} {_fmt(seconds):>10} {seconds / floor:>7.2f}x {err:>12}")


def _fmt(seconds):
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def max_rel_err(got, want):
    """Largest error relative to the size of the reference (entries that are
    differences of larger terms are not held to a relative standard they cannot meet)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))


# ---------------------------------------------------------------- T2: value + gradient, 10^6 points

def t2_numpy(x, y, z):
    r = np.sqrt(x * x + y * y + z * z)
    ez = np.exp(-z)
    lx = np.log(x)
    sy = np.sin(y)
    value = x * y + sy * z + lx * ez + r
    return value, y + ez / x + x / r, x + np.cos(y) * z + y / r, sy - lx * ez + z / r


def task_t2():
    rng = np.random.default_rng(0)
    n = 1_000_000
    x, y, z = rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    f = diffcli.compile(T2)
    floor = median_time(lambda: t2_numpy(x, y, z))
    ref = t2_numpy(x, y, z)
    ours = f.grad({"x": x, "y": y, "z": z}, batch_ndim=1)
    rows = [("hand-written NumPy (floor)", floor, 0.0),
            ("diffcli API grad, batch of 10^6", median_time(lambda: f.grad({"x": x, "y": y, "z": z}, batch_ndim=1)),
             max(max_rel_err(ours.value, ref[0]), *(max_rel_err(ours[k], r) for k, r in zip("xyz", ref[1:]))))]
    print_table("T2 value + gradient of " + T2 + ", N=10^6", rows, floor)


# ---------------------------------------------------------------- the cheap gradient principle

def task_cheap():
    """value + gradient should cost a small constant multiple of the value alone."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    points = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}
    rosen = {"x": rng.uniform(-1, 1, (10_000, 100))}
    for title, expression, at in [("T2", T2, points),
                                  ("Rosenbrock n=100, B=10^4", "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)",
                                   rosen)]:
        f = diffcli.compile(expression)
        value = median_time(lambda: f.eval(at, batch_ndim=1))
        both = median_time(lambda: f.grad(at, batch_ndim=1))
        print_table(f"Cheap gradient, {title}: value + gradient against value alone",
                    [("diffcli eval (value only)", value, None), ("diffcli grad (value + gradient)", both, None)],
                    value)


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


def task_pipeline():
    n = 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        points, ours, theirs = (os.path.join(tmp, name) for name in ("p.csv", "ours.csv", "numpy.csv"))
        write_points_csv(points, n)
        script = os.path.join(tmp, "baseline.py")
        Path(script).write_text(NUMPY_SCRIPT)
        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def numpy_run():
            subprocess.run([sys.executable, script, points, theirs], check=True, env=env)

        def diffcli_run():
            with open(points) as stdin, open(ours, "w") as stdout:
                subprocess.run([sys.executable, "-m", "diffcli", "grad", T2, "--points", "-", "--in", "csv",
                                "--format", "csv"], stdin=stdin, stdout=stdout, check=True, env=env)

        floor = median_time(numpy_run, repeat=3)
        mine = median_time(diffcli_run, repeat=3)
        a = np.loadtxt(ours, delimiter=",", skiprows=1)
        b = np.loadtxt(theirs, delimiter=",", skiprows=1)
        rows = [("NumPy script: loadtxt + hand-written + savetxt", floor, 0.0),
                ("diffcli grad --points - --in csv --format csv", mine, max_rel_err(a, b))]
        print_table(f"Pipeline: {n:,} points, CSV in -> CSV out (whole processes)", rows, floor)
        print(f"  throughput: diffcli {n / mine:,.0f} points/s, NumPy script {n / floor:,.0f} points/s")


def task_rss():
    n = 10_000_000
    gen = (f"import numpy as np, sys\nrng = np.random.default_rng(0)\nsys.stdout.write('x,y,z\\n')\n"
           f"for s in range(0, {n}, 100000):\n"
           f"    a = np.column_stack([rng.uniform(0.5, 2, 100000), rng.uniform(-1, 1, 100000), "
           f"rng.uniform(-1, 1, 100000)])\n"
           f"    sys.stdout.write('\\n'.join(','.join(map(repr, r)) for r in a.tolist()) + '\\n')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    producer = subprocess.Popen([sys.executable, "-c", gen], stdout=subprocess.PIPE)
    start = time.perf_counter()
    consumer = subprocess.run([sys.executable, "-m", "diffcli", "grad", T2, "--points", "-", "--in", "csv",
                               "--format", "csv"], stdin=producer.stdout, stdout=subprocess.DEVNULL,
                              env=env, check=True)
    producer.wait()
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"\nStreaming {n:,} points through grad (CSV in and out): {elapsed:.1f} s, "
          f"peak RSS of the largest child process {peak_kib / 1024:.0f} MB (status {consumer.returncode})")


TASKS = {"t2": task_t2, "cheap": task_cheap, "pipeline": task_pipeline}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"some of: {', '.join(TASKS)}")
    parser.add_argument("--rss", action="store_true", help="measure peak RSS for 10^7 streamed points")
    args = parser.parse_args()
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    print(f"diffcli {diffcli.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    for name in args.tasks or TASKS:
        TASKS[name]()
    if args.rss:
        task_rss()


if __name__ == "__main__":
    main()
