"""Fuzzing the real command: random bytes, grammar-shaped expressions (and
mutations of them) and random point files, each run as its own `diffcli`
process under a memory limit and a time limit.

Whatever the input, the process must end by itself with a status in
{0, 1, 2, 3}, print no traceback, say something on stderr when it fails, leave
stdout empty when a one-point request fails (a --points stream may end early,
but only on a record boundary), and stay under the memory budget.

Seeded and bounded: the default run stops starting cases after
DIFFCLI_FUZZ_SECONDS (default 30) seconds. A longer run, or another seed:
    DIFFCLI_FUZZ_SECONDS=900 DIFFCLI_FUZZ_SEED=7 python -m pytest tests/test_fuzz.py
A failing case is printed whole (command, files as Python bytes literals), so
it can be replayed by hand.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tests.test_cli import _diffcli_command, _env

SECONDS = float(os.environ.get("DIFFCLI_FUZZ_SECONDS", "30"))
SEED = int(os.environ.get("DIFFCLI_FUZZ_SEED", "20261203"))
# The address-space limit of every child: far above what a healthy run needs
# (NumPy and its thread pools map about 0.6 GB), far below what the bombs of
# issue 14 took (3-10 GB). diffcli's default memory budget is half of it, and
# its peak RSS must stay under that budget.
ADDRESS_SPACE = 3 << 30
RSS_BUDGET = ADDRESS_SPACE // 2
TIME_LIMIT = 60.0  # seconds per case: no hang (a compile may take up to its own 60 s bound)
ALLOWED_STATUSES = {0, 1, 2, 3}

UNARY = ("sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh exp expm1 log log1p log2 "
         "log10 sqrt cbrt abs sign floor ceil sigmoid relu softplus logsumexp softmax sum mean prod "
         "max min norm cumsum cumprod transpose trace").split()
BINARY = "atan2 hypot pow minimum maximum dot outer".split()
OPERATORS = ["+", "-", "*", "/", "^", "**", "@", "<", "<=", ">", ">=", "==", "!="]
NUMBERS = ["0", "1", "2", "0.5", ".5", "1e-3", "3", "1e308", "1e-320", "pi", "e", "inf", "nan", "-0"]
SCALARS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, 1e308, -1e-308, 5e-324, float("nan"), float("inf"),
           float("-inf")]
NAMES = ["x", "y", "z"]


@dataclass
class Case:
    args: list
    files: dict = field(default_factory=dict)  # name -> bytes, written into the case's directory
    stdin: bytes = b""
    points: bool = False  # a --points stream: may end early on a record boundary
    check: bool = False  # --check: a failed check (status 1) still prints its table

    def describe(self) -> str:
        return f"args={self.args!r} files={self.files!r} stdin={self.stdin!r}"


# ---------------------------------------------------------------- generators


def _expression(rng: random.Random, depth: int = 0) -> str:
    """A grammar-shaped expression (bounded depth; the generator may recurse, diffcli may not)."""
    if depth > 4 or rng.random() < 0.25:
        return rng.choice(NAMES + NUMBERS[:8])
    kind = rng.randrange(9)
    if kind == 0:
        return f"{rng.choice(UNARY)}({_expression(rng, depth + 1)})"
    if kind == 1:
        return f"{rng.choice(BINARY)}({_expression(rng, depth + 1)}, {_expression(rng, depth + 1)})"
    if kind == 2:
        items = ", ".join(_expression(rng, depth + 1) for _ in range(rng.randint(1, 3)))
        return f"[{items}]"
    if kind == 3:
        index = rng.choice(["0", "-1", "1:", ":-1", "::2", "0, 1", ":, 0", "5"])
        return f"{_expression(rng, depth + 1)}[{index}]"
    if kind == 4:
        return f"-{_expression(rng, depth + 1)}"
    if kind == 5:
        return f"{rng.choice(NUMBERS[:4])}{rng.choice(NAMES)}"
    if kind == 6:
        return f"where({_expression(rng, depth + 1)} > 0, {_expression(rng, depth + 1)}, " \
               f"{_expression(rng, depth + 1)})"
    if kind == 7:
        return f"r = {_expression(rng, depth + 1)}; r {rng.choice(OPERATORS[:5])} {_expression(rng, depth + 1)}"
    return f"({_expression(rng, depth + 1)} {rng.choice(OPERATORS)} {_expression(rng, depth + 1)})"


def _mutated(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(chars) + 1)
        action = rng.randrange(3)
        if action == 0 and chars:
            del chars[min(where, len(chars) - 1)]
        elif action == 1:
            chars.insert(where, rng.choice("()[],;:=+-*/^@<>!#.eE0123456789xy \n\t\"'\\$`"))
        else:
            chars[where:where] = chars[where:where + rng.randint(1, 8)]
    return "".join(chars)


def _number_text(rng: random.Random) -> str:
    value = rng.choice(SCALARS)
    return repr(value) if rng.random() < 0.8 else rng.choice(["-0", "1e400", "0x10", "1_0", "", "1,5"])


def _value_text(rng: random.Random) -> str:
    shape = rng.choice([(), (), (1,), (2,), (3,), (2, 2), (0,)])
    if not shape:
        return _number_text(rng)
    if len(shape) == 1:
        return "[" + ", ".join(_number_text(rng) for _ in range(shape[0])) + "]"
    return "[" + ", ".join("[" + ", ".join(_number_text(rng) for _ in range(shape[1])) + "]"
                           for _ in range(shape[0])) + "]"


def _at_options(rng: random.Random) -> list:
    options = []
    for name in rng.sample(NAMES, rng.randint(0, 3)):
        options += ["--at", f"{name}={_value_text(rng)}"]
    return options


COMMANDS = ["eval", "grad", "grad", "jac", "hess", "vjp", "jvp", "hvp", "graph", "plot"]
FORMAT_OPTIONS = [[], ["--json"], ["--csv"], ["--tsv"], ["--nl"], ["-q"], ["--format", "table"]]


def _command_options(rng: random.Random, command: str) -> tuple[list, bool]:
    options, check = [], False
    if command == "plot":
        options += ["--over", rng.choice(["x=-3:3", "x=0:1", "x=1:1", "y=-pi:pi", "x[0]=-1:1"]),
                    "--samples", str(rng.randint(2, 40)), "--format", rng.choice(["csv", "json"])]
        if rng.random() < 0.5:
            options += ["--order", str(rng.randint(1, 3))]
        return options, check
    if command == "graph":
        return (["--dot"] if rng.random() < 0.3 else []), check
    if command == "vjp":
        options += ["--seed", _value_text(rng)]
    if command in ("jvp", "hvp"):
        options += ["--tangent", f"{rng.choice(NAMES)}={_value_text(rng)}"]
    if command == "grad" and rng.random() < 0.3:
        options += ["--order", str(rng.choice([1, 2, 3, 4, 4, 8, 16, 65, 1100, 10 ** 30]))]
    if command in ("grad", "jac", "hess") and rng.random() < 0.1:
        options += ["--symbolic"]
    if command in ("grad", "jac", "vjp", "hess") and rng.random() < 0.15:
        options += ["--check"]
        check = True
    if rng.random() < 0.2:
        options += ["--wrt", rng.choice(NAMES)]
    options += rng.choice(FORMAT_OPTIONS)
    options += rng.choice([[], [], ["--strict"], ["--kink", "error"], ["--kink", "nan"]])
    return options, check


def _big_vector(rng: random.Random) -> str:
    return "x=[" + ",".join(["0.5"] * rng.choice([100, 3000, 11000])) + "]"


BOMBS = ["sum(outer(x, x)^2)", "sum(outer(x, x))", "cumsum(x)", "sum(x^2)", "outer(x, x)"]


def _one_point_case(rng: random.Random) -> Case:
    command = rng.choice(COMMANDS)
    if rng.random() < 0.08:  # big values: the memory estimate must refuse what does not fit
        return Case([rng.choice(["grad", "jac", "hess"]), rng.choice(BOMBS), "--at", _big_vector(rng),
                     *rng.choice(FORMAT_OPTIONS)])
    text = _expression(rng)
    if rng.random() < 0.4:
        text = _mutated(rng, text)
    options, check = _command_options(rng, command)
    at = _at_options(rng)
    if rng.random() < 0.2:  # the expression from a file, sometimes with stray bytes
        data = text.encode() + (bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
                                if rng.random() < 0.5 else b"")
        return Case([command, "-f", "expr.txt", *at, *options], {"expr.txt": data}, check=check)
    return Case([command, text, *at, *options], check=check)


def _random_bytes_case(rng: random.Random) -> Case:
    data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    command = rng.choice(["eval", "grad", "jac", "graph"])
    if rng.random() < 0.5:
        return Case([command, "-f", "-", "--at", "x=1"], stdin=data)
    return Case([command, "-f", "expr.bin", "--at", "x=1"], {"expr.bin": data})


def _cell(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.7:
        return _number_text(rng)
    return rng.choice(['"1"', '"', "nan", "x", " ", "1e99999", "9" * 400, '"a,b"', "[1, 2]", "\\N"])


def _csv_points(rng: random.Random, delimiter: str) -> bytes:
    columns = rng.sample(["x", "y", "x[0]", "x[1]", "id", "x[2]", "x[9]", "x[-1]", "x[0][0]", "x[a]"],
                         rng.randint(1, 4))
    lines = [delimiter.join(columns)]
    for _ in range(rng.randint(0, 30)):
        width = len(columns) + rng.choice([0, 0, 0, 0, -1, 1])
        lines.append(delimiter.join(_cell(rng) for _ in range(max(width, 0))))
    data = "\n".join(lines).encode()
    if rng.random() < 0.15:
        at = rng.randrange(len(data) + 1)
        data = data[:at] + bytes([rng.randrange(128, 256)]) + data[at:]
    return data


def _json_value(rng: random.Random):
    pick = rng.random()
    if pick < 0.6:
        value = rng.choice(SCALARS)
        return value if value == value and abs(value) != float("inf") else rng.choice([None, "nan", 1])
    if pick < 0.8:
        return [_json_value(rng) for _ in range(rng.randint(0, 3))]
    return rng.choice(["1", True, {"a": 1}, 10 ** 30, -(10 ** 25), [[1, 2], [3]], 1.5e300])


def _ndjson_points(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 30)):
        if rng.random() < 0.1:
            lines.append(rng.choice(["{", "[]", "null", "{\"x\": }", "[" * 50, "{\"x\": 1} {\"x\": 2}", ""]))
            continue
        record = {name: _json_value(rng) for name in rng.sample(NAMES + ["id"], rng.randint(0, 3))}
        lines.append(json.dumps(record))
    return "\n".join(lines).encode()


def _points_case(rng: random.Random) -> Case:
    kind = rng.choice(["csv", "tsv", "ndjson", "json"])
    if kind in ("csv", "tsv"):
        data = _csv_points(rng, "," if kind == "csv" else "\t")
    elif kind == "ndjson":
        data = _ndjson_points(rng)
    else:
        data = b"[" + _ndjson_points(rng).replace(b"\n", b",") + rng.choice([b"]", b"", b",]"])
    name = f"points.{kind}"
    if rng.random() < 0.2:
        data, name = gzip.compress(data), name + ".gz"
    command = rng.choice(["eval", "grad", "jac", "vjp", "hess"])
    expression = rng.choice(["x*y", "sin(x) + y", "sum(x^2)", "x", "log(x) * y", "[x, y]", "x @ x"])
    options = ["--points", name, *rng.choice([[], ["--csv"], ["--tsv"], ["--nl"], ["--json"], ["-q"]])]
    if command == "vjp":
        options += ["--seed", _value_text(rng)]
    options += rng.choice([[], [], ["--skip-bad"], ["--chunk", str(rng.randint(1, 8))], ["--keep-all"],
                           ["--at", "y=2"], ["--strict"]])
    if rng.random() < 0.5:
        return Case([command, expression, *options], {name: data}, points=True)
    options[1] = "-"
    plain = gzip.decompress(data) if name.endswith(".gz") else data
    return Case([command, expression, *options, "--in", kind], stdin=plain, points=True)


GENERATORS = [(_one_point_case, 6), (_random_bytes_case, 2), (_points_case, 3)]


def _cases(rng: random.Random):
    makers = [maker for maker, weight in GENERATORS for _ in range(weight)]
    while True:
        yield rng.choice(makers)(rng)


# ---------------------------------------------------------------- running one case


@dataclass
class Outcome:
    status: int | None  # None: killed by the time limit
    signal: int | None
    stdout: bytes
    stderr: bytes
    max_rss: int  # bytes


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run(case: Case) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="diffcli-fuzz-") as directory:
        for name, data in case.files.items():
            with open(os.path.join(directory, name), "wb") as file:
                file.write(data)
        env = _env()
        env.update({"COLUMNS": "100", "DIFFCLI_NATIVE": "0", "DIFFCLI_CACHE_DIR": os.path.join(directory, "cache")})
        with open(os.path.join(directory, ".out"), "w+b") as out, \
                open(os.path.join(directory, ".err"), "w+b") as err:
            proc = subprocess.Popen(_diffcli_command() + case.args, cwd=directory, env=env,
                                    stdin=subprocess.PIPE, stdout=out, stderr=err, preexec_fn=_limit_memory)
            try:
                proc.stdin.write(case.stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            status, sig, rss = _wait(proc)
            out.seek(0)
            err.seek(0)
            return Outcome(status, sig, out.read(), err.read(), rss)


def _wait(proc: subprocess.Popen) -> tuple[int | None, int | None, int]:
    """Reap the child ourselves with wait4, for its own peak RSS (getrusage of
    all children would mix the cases that run side by side)."""
    deadline = time.monotonic() + TIME_LIMIT
    while True:
        pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(wait_status)  # so Popen does not wait again
            rss = usage.ru_maxrss * 1024
            if os.WIFSIGNALED(wait_status):
                return None, os.WTERMSIG(wait_status), rss
            return os.WEXITSTATUS(wait_status), None, rss
        if time.monotonic() > deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return None, None, usage.ru_maxrss * 1024
        time.sleep(0.01)


def problems(case: Case, outcome: Outcome) -> list[str]:
    found = []
    if outcome.status is None:
        found.append(f"killed by signal {outcome.signal}" if outcome.signal else
                     f"still running after {TIME_LIMIT:.0f} s")
    elif outcome.status not in ALLOWED_STATUSES:
        found.append(f"exit status {outcome.status}")
    if b"Traceback (most recent call last)" in outcome.stderr or b"Exception ignored" in outcome.stderr:
        found.append("a traceback on stderr")
    if outcome.status and not outcome.stderr.strip():
        found.append("failed without a word on stderr")
    if outcome.status in (2, 3) and not case.points and outcome.stdout:
        found.append("output on stdout although the request failed")
    if outcome.status == 1 and not case.check and not case.points and outcome.stdout:
        found.append("output on stdout although the request failed")
    if case.points and outcome.stdout and not outcome.stdout.endswith(b"\n"):
        found.append("the stream ends in the middle of a record")
    if case.points and outcome.stdout and "--json" in case.args:
        try:
            json.loads(outcome.stdout)
        except ValueError:
            found.append("the JSON array written is not a whole document")
    if outcome.max_rss > RSS_BUDGET:
        found.append(f"peak RSS {outcome.max_rss >> 20} MiB over the budget of {RSS_BUDGET >> 20} MiB")
    return found


# ---------------------------------------------------------------- the test


def _gist(stderr: bytes) -> bytes:
    """The last line of stderr without its numbers and quoted parts: cases that
    fail the same way group together."""
    last = (stderr.strip().splitlines() or [b""])[-1]
    return re.sub(rb"\d+|'[^']*'", b"#", last)[:200]


def test_random_inputs_never_break_the_promises():
    rng = random.Random(SEED)
    cases = _cases(rng)
    deadline = time.monotonic() + SECONDS
    failures, count = {}, 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = []
        while time.monotonic() < deadline or running:
            while time.monotonic() < deadline and len(running) < 2:
                case = next(cases)
                running.append((case, pool.submit(_run, case)))
            case, future = running.pop(0)
            outcome = future.result()
            count += 1
            for problem in problems(case, outcome):
                failures.setdefault((problem, _gist(outcome.stderr)), []).append(
                    f"{problem}: {case.describe()}\n  status {outcome.status}; stderr: {outcome.stderr[-600:]!r}")
    assert count >= 20, f"only {count} cases ran in {SECONDS} s"
    # One example of each kind (the problem and the last line of stderr), the commonest first.
    kinds = sorted(failures.values(), key=len, reverse=True)
    assert not failures, f"{sum(map(len, kinds))} of {count} cases broke a promise, in {len(kinds)} ways:\n" \
        + "\n".join(f"[{len(examples)}x] {examples[0]}" for examples in kinds[:20])


def test_the_checks_catch_what_they_are_for():
    """The fuzzer's judge is itself tested: each kind of broken promise is seen."""
    one = Case(["eval", "x"])
    stream = Case(["eval", "x", "--points", "p.csv", "--json"], points=True)
    assert problems(one, Outcome(0, None, b"1.0\n", b"", 50 << 20)) == []
    assert "exit status 4" in problems(one, Outcome(4, None, b"", b"error: x", 0))
    assert "killed by signal 9" in problems(one, Outcome(None, 9, b"", b"", 0))
    assert "a traceback on stderr" in problems(one, Outcome(2, None, b"", b"Traceback (most recent call last):", 0))
    assert "failed without a word on stderr" in problems(one, Outcome(3, None, b"", b"", 0))
    assert "output on stdout although the request failed" in problems(one, Outcome(2, None, b"{}\n", b"e", 0))
    assert "the stream ends in the middle of a record" in problems(stream, Outcome(3, None, b'[{"v', b"e", 0))
    assert "the JSON array written is not a whole document" in problems(stream, Outcome(130, None, b'[{}\n', b"e", 0))
    assert any("over the budget" in p for p in problems(one, Outcome(0, None, b"", b"", RSS_BUDGET + 1)))


def test_the_runner_sees_a_memory_limit_and_a_status():
    """The child really runs under the address-space limit (a request far
    beyond it cannot succeed) and its own peak RSS is measured."""
    outcome = _run(Case(["eval", "sum(x)", "--at", "x=[1, 2, 3]", "-q"]))
    assert (outcome.status, outcome.stdout.strip()) == (0, b"6")
    assert 10 << 20 < outcome.max_rss < RSS_BUDGET
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"
    env = _env()
    child = subprocess.run(["python3", "-c", code], env=env, preexec_fn=_limit_memory, capture_output=True, text=True)
    assert int(child.stdout) == ADDRESS_SPACE
