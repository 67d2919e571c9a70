"""The command line, through click's CliRunner (fast) and through a real
subprocess of the `diffcli` command (what a user runs)."""

from __future__ import annotations

import json
import math
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from diffcli.cli import cli


def run(*args, input=None):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    return result


def run_json(*args):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------- the seed notebook, cell by cell

def test_seed_cos_plus_sin():
    doc = run_json("grad", "cos(x)+sin(x)", "--at", "x=2")
    assert doc["gradient"]["x"] == pytest.approx(-math.sin(2) + math.cos(2), rel=1e-15)
    assert f"{doc['gradient']['x']:.7f}" == "-1.3254443"


def test_seed_sin_and_square():
    assert run_json("grad", "sin(x)", "--at", "x=3")["gradient"]["x"] == pytest.approx(math.cos(3), rel=1e-15)
    assert run_json("eval", "x**2", "--at", "x=3")["value"] == 9.0


def test_seed_vectors():
    assert run_json("grad", "2*x", "--at", "x=2")["gradient"]["x"] == 2.0
    doc = run_json("grad", "cumsum(2*x)[-1]", "--at", "x=[2,2,2]")
    assert doc["value"] == 12.0 and doc["gradient"]["x"] == [2.0, 2.0, 2.0]
    doc = run_json("grad", "2*x[0] + 3*x[1] - 3*x[2]", "--at", "x=[1,2,3]")
    assert doc["value"] == -1.0 and doc["gradient"]["x"] == [2.0, 3.0, -3.0]


def test_seed_jacobian_and_vjp():
    doc = run_json("jac", "x**2", "--at", "x=[1,2,-2]")
    np.testing.assert_array_equal(doc["jacobian"]["x"], np.diag([2.0, 4.0, -4.0]))
    doc = run_json("vjp", "x**2", "--at", "x=[1,2,-2]", "--seed", "[1,0.8,0.6]")
    np.testing.assert_allclose(doc["vjp"]["x"], [2.0, 3.2, -2.4], rtol=1e-15)


def test_seed_two_variables_and_mean():
    for expression in ("x*y", "mean(x*y)"):
        doc = run_json("grad", expression, "--at", "x=3", "--at", "y=4")
        assert doc["gradient"] == {"x": 4.0, "y": 3.0}


def test_seed_vjp_of_two_vectors():
    doc = run_json("vjp", "x1*x2 + sin(x2) + log(x1)", "--at", "x1=[1.2,2.4,3.3]",
                   "--at", "x2=[4.4,5.2,5.5]", "--seed", "[1,1,1]")
    x1, x2 = np.array([1.2, 2.4, 3.3]), np.array([4.4, 5.2, 5.5])
    np.testing.assert_allclose(doc["vjp"]["x1"], x2 + 1 / x1, rtol=1e-15)
    np.testing.assert_allclose(doc["vjp"]["x2"], x1 + np.cos(x2), rtol=1e-15)
    np.testing.assert_allclose(doc["vjp"]["x1"], [5.2333, 5.6167, 5.8030], atol=5e-5)
    np.testing.assert_allclose(doc["vjp"]["x2"], [0.8927, 2.8685, 4.0087], atol=5e-5)


def test_no_hidden_accumulation_state():
    """The notebook's backward-twice cells printed -2.6509, -3.9763, ...: PyTorch's
    .grad accumulating. The same diffcli command gives the same answer every time."""
    answers = {run("grad", "cos(x)+sin(x)", "--at", "x=2", "-q").stdout for _ in range(3)}
    assert answers == {repr(-math.sin(2) + math.cos(2)) + "\n"}


# ---------------------------------------------------------------- output formats

def test_json_is_the_default_off_a_terminal_with_full_precision():
    result = run("grad", "cos(x) + sin(x)", "--at", "x=2")
    doc = json.loads(result.stdout)
    assert doc == {"expression": "cos(x) + sin(x)", "at": {"x": 2.0},
                   "value": math.cos(2) + math.sin(2), "gradient": {"x": -math.sin(2) + math.cos(2)}}


def test_quiet_prints_bare_derivative_components():
    result = run("grad", "sum(x^2) * y", "--at", "x=[1,2]", "--at", "y=3", "-q")
    assert result.stdout == "6\n12\n5\n"  # integral values without .0, as jq prints them
    assert run("eval", "[1, 2] * x", "--at", "x=2.5", "-q").stdout == "2.5\n5\n"


def test_table_output_on_request():
    result = run("jac", "[x*y, sin(y)]", "--at", "x=1,y=2", "--format", "table", "--digits", "4")
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert lines[:2] == ["  value[0]        2", "  value[1]   0.9093"]
    assert "∂value/∂y" in lines
    assert any(line.split() == ["value[1]", "-0.4161"] for line in lines)


def test_nonfinite_numbers_are_null_in_json_with_a_warning():
    result = run("grad", "1 / x", "--at", "x=0", "--json")
    doc = json.loads(result.stdout)
    assert doc["value"] is None and doc["gradient"]["x"] is None
    assert "div produced inf (inputs 1.0, 0.0)" in result.stderr
    assert "written as null" in result.stderr
    assert run("grad", "sqrt(x)", "--at", "x=0", "-q").stdout == "inf\n"


def test_domain_warning_names_the_operation_and_points_at_it():
    result = run("eval", "x + log(x - 2)", "--at", "x=1", "--json")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[:3] == ["warning: log produced nan (input -1.0)",
                                              "  x + log(x - 2)", "      ^^^"]


def test_division_by_zero_warning():
    result = run("eval", "1 / x", "--at", "x=0", "-q")
    assert result.stdout == "inf\n"
    assert "div produced inf (inputs 1.0, 0.0)" in result.stderr


def test_expression_from_a_file_and_stdin(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("r = x * 2\nr ^ 2\n")
    assert run("grad", "-f", str(path), "--at", "x=1", "-q").stdout == "8\n"
    assert run("grad", "-f", "-", "--at", "x=1", "-q", input="x^3").stdout == "3\n"


def test_at_accepts_arithmetic_constants_and_commas():
    doc = run_json("eval", "x + y[1]", "--at", "x=pi/2,y=[1, 2*3]")
    assert doc["value"] == math.pi / 2 + 6
    assert doc["at"] == {"x": math.pi / 2, "y": [1.0, 6.0]}


def test_wrt_selects_variables():
    assert run_json("grad", "x*y", "--at", "x=3,y=4", "--wrt", "y")["gradient"] == {"y": 3.0}


def test_version_and_help():
    assert run("--version").stdout.startswith("diffcli, version ")
    help_text = run("grad", "--help").stdout
    assert "EXIT STATUS" in help_text and "diffcli grad 'cos(x) + sin(x)' --at x=2" in help_text


COMPUTING_COMMANDS = ["eval", "grad", "jac", "vjp", "hess", "jvp", "hvp", "series"]


def test_every_computing_command_takes_the_shared_options_first_and_each_is_a_field_of_options():
    """output_options gives the seven commands the same options, ahead of their own,
    and Options has a field for every option of each: an option added to a command
    but not to Options would fail only when that command runs."""
    import dataclasses

    from diffcli.cli import Options

    shared = [param.name for param in cli.commands["eval"].params]
    fields = {field.name for field in dataclasses.fields(Options)}
    own = set()
    for name in COMPUTING_COMMANDS:
        params = [param.name for param in cli.commands[name].params]
        assert params[:len(shared)] == shared, name
        assert set(params) <= fields, (name, set(params) - fields)
        own |= set(params)
    assert {"expression", "points", "output_format", "engine", "max_memory"} <= set(shared)
    assert own == fields  # no field that no command fills


def test_options_lists_the_formats_asked_for_in_flag_order():
    from diffcli.cli import Options

    parsed = cli.commands["grad"].make_context("grad", ["x", "--csv", "--format", "tsv", "--json"])
    options = Options(**parsed.params)
    assert options.formats == ["tsv", "json", "csv"]
    assert run("grad", "x", "--at", "x=1", "--csv", "--json").stderr.strip() == \
        "diffcli: error: choose one output format, not csv and json"


# ---------------------------------------------------------------- errors: stderr, status, no traceback

@pytest.mark.parametrize("args,status,message", [
    (["grad", "x +", "--at", "x=1"], 2, "diffcli: error: expected an operand after '+'"),
    (["grad", "x", "--at", "y=1"], 2, "diffcli: error: no value for variable x: give --at x=..."),
    (["grad", "x + y", "--at", "x=1"], 2, "no value for variable y"),
    (["grad", "x", "--at", "x=1", "--at", "x=2"], 2, "'x' is given twice"),
    (["grad", "x", "--at", "x="], 2, "--at x= has no value"),
    (["grad", "x", "--at", "x=[1,"], 2, "--at x: '[' is never closed"),
    (["grad", "x", "--at", "x=y"], 2, "a value must be constant"),
    (["grad", "x", "--at", "x"], 2, "--at expects NAME=VALUE"),
    (["grad", "pi * x", "--at", "x=1", "--at", "pi=3"], 2, "'pi' is a built-in constant"),
    (["grad", "x^2", "--at", "x=[1,2]"], 2, "grad needs a scalar expression, but this one is a 2-vector"),
    (["grad", "x", "--at", "x=1", "--wrt", "z"], 2, "not a variable of the expression"),
    (["vjp", "x^2", "--at", "x=[1,2]", "--seed", "[1,2,3]"], 2, "the seed is a 3-vector"),
    (["grad", "[1,2] + [1,2,3]"], 2, "shapes do not match"),
    (["grad"], 2, "no expression"),
    (["grad", "x", "-f", "-"], 2, "not both"),
    (["grad", "x", "--bogus"], 2, "diffcli: error: no such option '--bogus' (see "),
])
def test_errors_are_one_clear_message_with_status(args, status, message):
    result = run(*args)
    assert result.exit_code == status
    assert message in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_unused_variable_is_a_warning():
    result = run("grad", "x^2", "--at", "x=2", "--at", "y=3", "-q")
    assert result.exit_code == 0 and result.stdout == "4\n"
    assert "warning: 'y' is given but not used" in result.stderr


# ---------------------------------------------------------------- the real command, in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _diffcli_command():
    """The installed command (as CI has it, after `pip install .`); in a bare
    checkout, the same entry point as a module of the source tree."""
    exe = shutil.which("diffcli")
    return [exe] if exe else [sys.executable, "-m", "diffcli"]


def _env():
    env = dict(os.environ)
    if not shutil.which("diffcli"):
        env["PYTHONPATH"] = REPO
    return env


def test_real_process_json_and_status(tmp_path):
    proc = subprocess.run(_diffcli_command() + ["grad", "cos(x) + sin(x)", "--at", "x=2"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["gradient"]["x"] == -math.sin(2) + math.cos(2)


def test_real_process_parse_error_has_no_traceback(tmp_path):
    proc = subprocess.run(_diffcli_command() + ["grad", "sin(x", "--at", "x=2"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "diffcli: error: '(' is never closed\n  sin(x\n     ^\n"


def test_real_process_quiet_for_shell_substitution(tmp_path):
    env = _env()
    proc = subprocess.run(["bash", "-c", " ".join(_diffcli_command())
                           + " grad 'x^2' --at x=3 -q"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert proc.stdout == "6\n"


# ---------------------------------------------------------------- output: full disks, closed pipes, Ctrl-C


def _diffcli_shell(args: str) -> str:
    return " ".join(map(shlex.quote, _diffcli_command())) + " " + args


@pytest.mark.parametrize("args", [
    "--help", "--version", "grad --help", "grad 'x^2' --at x=3", "grad 'x^2' --at x=3 -q",
    "jac 'x^2' --at 'x=[1,2]' --format table", "grad 'x^2' --at x=3 --csv", "grad 'x^2' --at x=3 --tsv",
    "grad 'x^2' --at x=3 --nl", "grad 'sin(x)' --symbolic", "grad 'sin(x)' --symbolic --json",
    "graph 'x*y + y'", "graph 'x*y' --dot", "plot 'sin(x)' --over x=0:1 --format csv",
    "plot 'sin(x)' --over x=0:1 --format json", "eval 'x' --points examples/points.csv --in csv --json",
])
def test_a_full_disk_is_one_line_and_status_4(args):
    proc = subprocess.run(["bash", "-c", _diffcli_shell(args) + " > /dev/full"], capture_output=True,
                          text=True, cwd=REPO, env=_env(), timeout=60)
    assert proc.stderr == "diffcli: cannot write output: No space left on device\n"
    assert proc.returncode == 4


@pytest.mark.parametrize("args", [
    "jac 'x^2' --at 'x=[" + ",".join(map(str, range(60))) + "]' --format table --color never",
    "hess 'sum(x^3)' --at 'x=[" + ",".join(map(str, range(60))) + "]' --format table --color never",
    "graph '" + " + ".join(f"sin({i}*x)" for i in range(60)) + "' --at x=1 --format table --color never",
])
def test_head_after_a_wide_table_is_quiet_with_status_0(args):
    """rich's Console exits with status 1 on a closed pipe; the other formats end with 0."""
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", _diffcli_shell(args) + " | head -1"],
                          capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 1


@pytest.fixture(scope="module")
def many_points(tmp_path_factory):
    path = tmp_path_factory.mktemp("points") / "points.csv"
    path.write_text("x\n" + "\n".join(str(i / 1000) for i in range(300_000)) + "\n")
    return path


def _complete_records(fmt: str, text: str) -> int:
    """The number of records in text, asserting that it ends on a record boundary."""
    if fmt == "json":
        return len(json.loads(text))  # a closed array
    assert text.endswith("\n")
    lines = text.splitlines()
    if fmt == "ndjson":
        for line in lines:
            assert set(json.loads(line)) == {"value", "gradient"}
        return len(lines)
    delimiter = "," if fmt == "csv" else "\t"
    assert lines[0].split(delimiter) == ["value", "d/dx"]
    for line in lines[1:]:
        value, derivative = map(float, line.split(delimiter))
        assert derivative == pytest.approx(2 * math.sqrt(value))
    return len(lines) - 1


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ndjson", "json"])
def test_ctrl_c_mid_stream_ends_on_a_record_boundary(fmt, many_points):
    """SIGINT while a chunk is being written (the pipe is full, so the write is
    blocked): the chunk is finished, the JSON array closed, status 130."""
    output = interrupted_after_first_output(["grad", "x^2", "--points", str(many_points), "--format", fmt])
    records = _complete_records(fmt, output.decode())
    assert 0 < records < 300_000


def interrupted_after_first_output(args: list[str]) -> bytes:
    """Run diffcli, send SIGINT once its first byte of output arrives (the pipe
    then fills and the write in progress blocks), and check that it ends with
    status 130 and 'interrupted'; everything it wrote."""
    proc = subprocess.Popen(_diffcli_command() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), cwd=REPO)
    try:
        first = proc.stdout.read(1)
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        stderr = proc.stderr.read().decode()
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert status == 130, stderr
    assert stderr.endswith("interrupted\n") and "Traceback" not in stderr
    return first + rest


def _limited_memory(megabytes: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
    return limit


@pytest.mark.parametrize("fmt", ["--json", "-q", "--csv"])
def test_a_big_jacobian_is_written_in_bounded_memory(fmt, tmp_path):
    """A 1,500 x 1,500 Jacobian (18 MB of float64) under a 300 MB address-space
    limit: the whole-string output (25 bytes a number as text, 32 more as a Python
    float in a list, 60 more for every CSV label) needed over 450 MB."""
    n = 1500
    at = "x=[" + ",".join(str(i / n) for i in range(n)) + "]"
    env = dict(_env(), OPENBLAS_NUM_THREADS="1")  # OpenBLAS reserves address space per thread
    out = tmp_path / "out"
    with out.open("w") as stdout:
        proc = subprocess.run(_diffcli_command() + ["jac", "cumsum(x)", "--at", at, fmt], stdout=stdout,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, timeout=120,
                              preexec_fn=_limited_memory(300))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    if fmt == "--json":
        jacobian = np.array(json.loads(text)["jacobian"]["x"])
    elif fmt == "-q":
        jacobian = np.array(text.split(), dtype=float).reshape(n, n)
    else:
        header, row = text.splitlines()
        assert header.split(",")[n + 1] == "dvalue[0]/dx[1]"
        jacobian = np.array(row.split(",")[n:], dtype=float).reshape(n, n)
    np.testing.assert_array_equal(jacobian, np.tril(np.ones((n, n))))  # d cumsum(x)[i] / dx[j]


def test_graph_of_a_constant_vector_draws_it():
    result = run("graph", "[1] + x", "--color", "never")
    assert result.exit_code == 0, result.stderr
    assert "const 1 1" in result.stdout


def test_graph_checks_the_backward_pass_before_writing_anything():
    result = run("graph", "x", "--at", "x=[1,2]")
    assert result.exit_code == 2
    assert "needs a scalar expression" in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------- the last safety nets of main()


def test_a_stderr_that_cannot_be_written_does_not_stop_the_answer():
    """2>/dev/full: the warning is lost, the answer is still written and the status is 0."""
    proc = subprocess.run(["bash", "-c", " ".join(_diffcli_command())
                           + " eval 'log(x)' --at x=-1 --json 2>/dev/full"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["value"] is None


def _main_with(patch: str, *args: str) -> subprocess.CompletedProcess:
    """diffcli's main() in a child after one line of monkeypatching."""
    script = f"import sys, click, diffcli.api, diffcli.cli as cli\n{patch}\nsys.argv = ['diffcli', *{list(args)!r}]\ncli.main()"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=60)


def test_running_out_of_memory_is_one_line_and_status_2():
    """Should the estimate ever be too low: no MemoryError traceback."""
    proc = _main_with("def boom(*a, **k): raise MemoryError()\ndiffcli.api.Function.compute = boom",
                      "grad", "sin(x)", "--at", "x=1", "--json")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("diffcli: error: out of memory") and len(proc.stderr.splitlines()) == 1


def test_ctrl_c_while_click_parses_is_interrupted_not_aborted():
    """click's standalone mode says 'Aborted!' with status 1; diffcli's statuses say 130."""
    proc = _main_with("def boom(*a, **k): raise KeyboardInterrupt\ncli.parse_at = boom",
                      "grad", "sin(x)", "--at", "x=1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "interrupted\n")
    proc = _main_with("def boom(*a, **k): raise click.Abort()\nclick.core.Context.invoke = boom",
                      "grad", "sin(x)", "--at", "x=1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "interrupted\n")


def test_usage_errors_and_help_keep_their_statuses_outside_standalone_mode():
    proc = _main_with("", "grad", "sin(x)", "--digits", "99")
    assert proc.returncode == 2 and "Invalid value for '--digits'" in proc.stderr and proc.stdout == ""
    proc = _main_with("", "--help")
    assert proc.returncode == 0 and "EXIT STATUS" in proc.stdout and "143" in proc.stdout
    proc = _main_with("", "--version")
    assert (proc.returncode, proc.stdout.split()[0]) == (0, "diffcli,")


def test_a_closed_stdout_is_one_line_and_status_4():
    proc = subprocess.run(["bash", "-c", " ".join(_diffcli_command()) + " eval x --at x=1 >&-"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert (proc.returncode, proc.stderr) == (4, "diffcli: cannot write output: stdout is closed\n")


@pytest.mark.parametrize("args", ["nonexist", "eval --bogus"])
def test_a_usage_error_keeps_its_status_when_stderr_is_full(args):
    proc = subprocess.run(["bash", "-c", " ".join(_diffcli_command()) + f" {args} 2>/dev/full"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")


# ---------------------------------------------------------------- input that fits the hand (issue 20)


def _real(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The command in a subprocess, stdout and stderr pipes (not a terminal)."""
    return subprocess.run(_diffcli_command() + list(args), capture_output=True, text=True, cwd=REPO,
                          env={**_env(), **(env or {})}, timeout=60)


def _on_a_terminal(*args: str, env: dict | None = None) -> tuple[int, str]:
    """The command with stdout and stderr on a real pty: its status and all it wrote."""
    import pty

    from .test_pipeline import _read_until

    master, slave = pty.openpty()
    environment = {k: v for k, v in _env().items() if k != "NO_COLOR"}
    proc = subprocess.Popen(_diffcli_command() + list(args), stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env={**environment, **(env or {})}, cwd=REPO)
    os.close(slave)
    try:
        shown = _read_until(master, b"\0 (never written: read until it closes)", 60)
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return status, shown.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("args,value,derivative", [
    (["grad", "-x^2", "--at", "x=3"], -9.0, -6.0),
    (["grad", "--", "-x^2", "--at", "x=3"], -9.0, -6.0),
    (["grad", "--at", "x=3", "--", "-x^2"], -9.0, -6.0),
    (["grad", "--at", "x=3", "-abs(x)", "--json"], -3.0, -1.0),
    (["grad", "-ax=3", "-x"], -3.0, -1.0),
    (["eval", "-2^2"], -4.0, None),
])
def test_an_expression_starting_with_a_minus_is_the_expression(args, value, derivative):
    proc = _real(*args)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["value"] == value
    if derivative is not None:
        assert doc["gradient"] == {"x": derivative}


def test_an_unknown_option_is_still_one_when_the_expression_is_given():
    result = run("grad", "x", "-z", "--at", "x=1")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("diffcli: error: no such option '-z'")


def test_click_usage_errors_in_the_one_style_and_the_closest_option_first():
    proc = _real("grad", "x", "--att", "x=1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "diffcli: error: no such option '--att': "
                                                                  "did you mean '--at'?\n")
    proc = _real("grad", "x", "--digits", "99")
    assert proc.returncode == 2
    assert proc.stderr == "diffcli: error: Invalid value for '--digits': 99 is not in the range 1<=x<=17.\n"
    proc = _real("nonexist")
    assert proc.returncode == 2 and proc.stderr.startswith("diffcli: error: No such command 'nonexist'")


def test_errors_are_red_on_a_terminal_and_plain_elsewhere_or_with_no_color():
    red = "diffcli: \x1b[31m\x1b[1merror:\x1b[0m "
    for args in (["grad", "x +", "--at", "x=1"], ["grad", "x", "--bogus"]):
        status, shown = _on_a_terminal(*args)
        assert status == 2 and shown.startswith(red), shown
        status, shown = _on_a_terminal(*args, env={"NO_COLOR": "1"})
        assert status == 2 and shown.startswith("diffcli: error: ") and "\x1b" not in shown
        proc = _real(*args)
        assert proc.stderr.startswith("diffcli: error: ") and "\x1b" not in proc.stderr


def test_json_is_indented_on_a_terminal_and_one_line_in_a_pipe():
    status, shown = _on_a_terminal("grad", "x*y", "--at", "x=3,y=4", "--json")
    assert status == 0
    assert shown == '{\n  "expression": "x*y",\n  "at": {\n    "x": 3.0,\n    "y": 4.0\n  },\n  "value": 12.0,\n' \
                    '  "gradient": {\n    "x": 4.0,\n    "y": 3.0\n  }\n}\n'
    piped = _real("grad", "x*y", "--at", "x=3,y=4", "--json").stdout
    assert piped.count("\n") == 1 and json.loads(piped) == json.loads(shown)


def test_quiet_integral_values_work_in_shell_arithmetic():
    proc = subprocess.run(["bash", "-c", "echo $(( $(" + _diffcli_shell("eval '2+3' -q") + ") + 1 ))"],
                          capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    assert proc.stdout == "6\n", proc.stderr
    assert run("eval", "[2.5, -0.0, 1e16, 10, 1/3]", "-q").stdout == \
        f"2.5\n-0\n1e+16\n10\n{1 / 3!r}\n"


def test_quiet_integral_values_in_many_points_too(tmp_path):
    """600 points: past COLUMNAR_ROWS, the rows are written by polars, not repr."""
    path = tmp_path / "p.csv"
    path.write_text("x\n" + "\n".join(str(i / 2) for i in range(600)) + "\n")
    out = run("grad", "x^2", "--points", str(path), "-q").stdout.split("\n")
    assert out[:4] == ["0", "1", "2", "3"] and out[599] == "599" and out[-1] == ""
    out = run("eval", "x", "--points", str(path), "-q").stdout.split("\n")
    assert out[:4] == ["0", "0.5", "1", "1.5"]


@pytest.mark.parametrize("args,message", [
    (["eval", "2+3", "-q", "--json"], "-q prints bare numbers and --json a format: choose one"),
    (["eval", "2+3", "-q", "--format", "csv"], "-q prints bare numbers and --format csv a format"),
    (["grad", "x^2", "--symbolic", "--check"], "--symbolic prints a formula and --check compares numbers"),
    (["grad", "x^2", "--at", "x=1", "--keep", "id"], "--keep is about --points input, and no --points is given"),
    (["grad", "x^2", "--at", "x=1", "--in", "csv"], "--in is about --points input"),
])
def test_contradictory_options_are_an_error(args, message):
    proc = _real(*args)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"diffcli: error: {message}") and len(proc.stderr.splitlines()) == 1


def test_a_missing_point_offers_the_formula_where_there_is_one():
    proc = _real("grad", "x^2")
    assert proc.returncode == 2
    assert proc.stderr == "diffcli: error: no value for variable x: give --at x=..., or --symbolic for the " \
                          "derivative as a formula\n"
    assert "--symbolic" not in run("jvp", "x^2", "--tangent", "x=1").stderr  # jvp has no --symbolic


def test_several_variables_spelled_as_people_try():
    assert run_json("grad", "x*y*z", "--at", "x=1,y=2,z=3", "--wrt", "x,z")["gradient"] == {"x": 6.0, "z": 2.0}
    assert run_json("grad", "x*y*z", "--at", "x=1,y=2,z=3", "--wrt", "x", "--wrt", "y")["gradient"] == \
        {"x": 6.0, "y": 3.0}
    proc = _real("grad", "x*y", "--at", "x=1", "y=2")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "diffcli: error: --at takes one NAME=VALUE: for several, write --at x=1,y=2 or " \
                          "repeat --at (--at x=1 --at y=2)\n"
    result = run("grad", "x*y", "--at", "x=1 y=2")
    assert result.exit_code == 2
    assert result.stderr == "diffcli: error: --at 'x=1 y=2': separate the variables with commas " \
                            "(--at x=1,y=2) or repeat --at\n"
    assert "separate the variables with commas (--tangent x=1,y=0)" in \
        run("jvp", "x*y", "--at", "x=1,y=2", "--tangent", "x=1 y=0").stderr
    assert run_json("eval", "x", "--at", "x=1 == 1")["value"] == 1.0  # a comparison is still a value


@pytest.mark.parametrize("shell,env,want", [
    ("bash", {"COMP_WORDS": "diffcli grad x --points exa", "COMP_CWORD": "4"}, "file,exa\n"),
    ("zsh", {"COMP_WORDS": "diffcli grad x --points exa", "COMP_CWORD": "4"}, "file\nexa\n_\n"),
    ("fish", {"COMP_WORDS": "diffcli grad x --points exa", "COMP_CWORD": "exa"}, "file,exa\n"),
])
def test_points_completes_file_names(shell, env, want):
    """click's completion: the shell is told to complete a file name after --points."""
    proc = _real(env={"_DIFFCLI_COMPLETE": f"{shell}_complete", **env})
    assert (proc.returncode, proc.stdout) == (0, want)


@pytest.mark.parametrize("expression,at,value", [
    ("(x+1)(x-1)", "x=3", 8.0),
    ("2x(x+1)", "x=3", 24.0),
    ("2pi x", "x=0.5", math.pi),
    ("sin(30deg)", None, math.sin(math.pi / 6)),
])
def test_implicit_multiplication_and_degrees_through_the_command(expression, at, value):
    args = ["eval", expression] + (["--at", at] if at else [])
    assert run_json(*args)["value"] == value


@pytest.mark.parametrize("expression,message", [
    ("sen(x)", "diffcli: error: unknown function 'sen': did you mean 'sin'?\n  sen(x)\n  ^^^\n"),
    ("np.sin(x)", "diffcli: error: 'np.sin': diffcli's names take no module prefix: did you mean 'sin'?\n"),
    ("cot(x)", "diffcli: error: unknown function 'cot': did you mean 1/tan(x)? (or 'dot', 'cos')\n"),
    ("x 2", "diffcli: error: missing operator before '2': write '*' to multiply, as in x*2\n"),
])
def test_unknown_names_and_missing_operators_through_the_command(expression, message):
    proc = _real("grad", expression, "--at", "x=1")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(message)
