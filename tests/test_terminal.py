"""What a person sees in a real terminal (issue 20), through the real command
with its stdout on a pty: plots of poles, wide tables, tables of points, and
the machine formats `plot` and `graph` write when stdout is a pipe."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import termios
import time

import numpy as np
import pytest

from tests.test_cli import REPO, _diffcli_command, _env, _limited_memory
from tests.test_pipeline import _read_until


def _pty(columns: int, lines: int) -> tuple[int, int]:
    import pty

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    return master, slave


def on_terminal(args: list[str], columns: int = 80, lines: int = 24, memory_mb: int | None = None,
                timeout: float = 60) -> tuple[int, str, str]:
    """Run diffcli with stdout on a pty of the given size: (status, what the
    terminal shows with \\r\\n as \\n, stderr)."""
    master, slave = _pty(columns, lines)
    env = dict(_env(), NO_COLOR="1", OPENBLAS_NUM_THREADS="1")
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(_diffcli_command() + args, stdout=slave, stderr=subprocess.PIPE, env=env, cwd=REPO,
                            preexec_fn=_limited_memory(memory_mb) if memory_mb else None)
    os.close(slave)
    try:
        shown = _read_until(master, b"\0never\0", timeout)
        status = proc.wait(timeout=timeout)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return status, shown.decode().replace("\r\n", "\n"), stderr


# ---------------------------------------------------------------- plots of poles (item 1)


def test_tan_on_a_terminal_is_drawn_in_bounded_memory():
    """It grew to 6.5 GB and died: uniplot walked every pixel of a segment from
    y = 1.4e7 (tan's derivative by its pole). Under a 300 MB address-space limit
    it is drawn, every line within the terminal, with the pole a gap."""
    status, shown, stderr = on_terminal(["plot", "tan(x)", "--over", "x=-3:3"], memory_mb=300)
    assert status == 0, stderr
    lines = shown.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert "f(x) = tan(x)" in shown and "f'(x) = 1 + tan(x) ^ 2" in shown
    assert "Traceback" not in stderr


def test_ctrl_c_stops_a_long_plot():
    """SIGINT while a million samples are drawn (about 3 s of work; the sampling
    before it ends with a warning on stderr, which tells us the drawing began)
    ends the run at once with status 130 and 'interrupted'."""
    master, slave = _pty(80, 24)
    env = dict(_env(), NO_COLOR="1")
    proc = subprocess.Popen(_diffcli_command() + ["plot", "tan(x) * exp(sin(x)) + sqrt(x + 3)", "--over", "x=-4:3",
                                                  "--samples", "1000000", "--order", "3"],
                            stdout=slave, stderr=subprocess.PIPE, env=env, cwd=REPO)
    os.close(slave)
    try:
        assert proc.stderr.readline().startswith(b"warning: sqrt produced nan")
        time.sleep(0.3)
        assert proc.poll() is None, "the plot finished before it could be interrupted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=30)
        waited = time.monotonic() - sent
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    assert status == 130 and stderr.endswith("interrupted\n") and "Traceback" not in stderr
    assert waited < 1.5


# ---------------------------------------------------------------- plot and graph in a pipeline (item 7)


def _piped(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(_diffcli_command() + args, capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=60)


def test_plot_writes_json_when_stdout_is_a_pipe():
    proc = _piped(["plot", "x^2", "--over", "x=0:1"])
    doc = json.loads(proc.stdout)
    assert len(doc["x"]) == 101 and doc["value"][50] == 0.25 and doc["derivatives"][0][100] == 2.0


def test_graph_pipes_into_jq():
    proc = subprocess.run(["bash", "-o", "pipefail", "-c",
                           " ".join(_diffcli_command()) + " graph 'x*y' | jq -c '[.nodes[].op]'"],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '["var","var","mul"]\n'


def test_plot_and_graph_draw_on_a_terminal():
    status, shown, _ = on_terminal(["graph", "x*y"])
    assert status == 0 and shown.splitlines()[0] == "#2 mul"
    status, shown, _ = on_terminal(["plot", "sin(x)", "--over", "x=0:1"], columns=60, lines=15)
    assert status == 0 and "f(x) = sin(x)" in shown and "┌" in shown


# ---------------------------------------------------------------- wide tables (item 2)


def _numbers_and_labels(shown: str) -> list[str]:
    return [cell for line in shown.splitlines() for cell in line.split() if "─" not in cell]


@pytest.mark.parametrize("columns", [40, 80, 120])
def test_a_wide_jacobian_is_drawn_in_column_blocks_with_every_digit(columns):
    """jac of cumsum(sin(x)) at 8 points showed 'valu…  0.54…  -0.4…' at 80
    columns: now every number is whole (the table's cells are exactly the
    numbers, with 8 significant digits), every line fits, none ends in a space,
    and every block repeats the row labels."""
    at = "x=[" + ",".join(str(i) for i in range(1, 9)) + "]"
    status, shown, stderr = on_terminal(["jac", "cumsum(sin(x))", "--at", at], columns=columns)
    assert status == 0, stderr
    lines = shown.splitlines()
    assert max(map(len, lines)) <= columns and all(line == line.rstrip() for line in lines)
    assert "…" not in shown
    x = np.arange(1, 9)
    jacobian = np.tril(np.broadcast_to(np.cos(x), (8, 8)))  # d cumsum(sin x)[i] / dx[j] = cos(x[j]) for j <= i
    cells = _numbers_and_labels(shown.split("∂value/∂x", 1)[1])
    numbers = [c for c in cells if not c.startswith(("value[", "x["))]
    headers = [c for c in cells if c.startswith("x[")]
    assert sorted(set(headers)) == [f"x[{j}]" for j in range(8)] and len(headers) == 8  # each column once
    blocks = cells.count("value[0]")
    assert blocks >= 2 and all(cells.count(f"value[{i}]") == blocks for i in range(8))  # labels in every block
    expected = sorted(f"{v:.8g}" if v else "0" for v in jacobian.ravel())
    assert sorted(numbers) == expected


def test_a_15_by_15_jacobian_at_120_columns_is_readable():
    at = "x=[" + ",".join(str(i) for i in range(1, 16)) + "]"
    status, shown, _ = on_terminal(["jac", "x * sum(x)", "--at", at], columns=120)
    table = shown.split("∂value/∂x", 1)[1]
    assert status == 0 and "…" not in shown and max(map(len, shown.splitlines())) <= 120
    assert table.count("value[14]") >= 2  # more than one block, each with all 15 row labels
    rows = [line.split() for line in table.splitlines() if line.strip().startswith("value[3]")]
    # d(x_i * sum(x))/dx_j = x_i + [i == j] sum(x): row 3 is 4 everywhere, 4 + 120 on the diagonal
    assert [cell for row in rows for cell in row[1:]] == ["4"] * 3 + ["124"] + ["4"] * 11


# ---------------------------------------------------------------- shapes as people think of them (item 9)


def test_hess_of_scalar_variables_is_one_labelled_matrix():
    """It printed four one-entry blocks; now one 2 x 2 matrix labelled by variable."""
    status, shown, _ = on_terminal(["hess", "x^3*y + exp(x)", "--at", "x=1,y=2"])
    assert status == 0
    # d2/dx2 = 6xy + e^x = 12 + e, d2/dxdy = 3x^2 = 3, d2/dy2 = 0
    assert shown == (f"  value   {2 + np.e:.8g}\n\n∂²value/∂(x, y)²\n\n                x    y\n"
                     f" {'─' * 22}\n   x    {12 + np.e:.8g}    3\n   y            3    0\n\n")


def test_hess_of_vector_and_scalar_is_a_block_matrix():
    status, shown, _ = on_terminal(["hess", "sum(x^3)*y", "--at", "x=[1,2]", "--at", "y=3"])
    rows = {line.split()[0]: line.split()[1:] for line in shown.split("²", 2)[-1].splitlines()
            if line.strip().startswith(("x[", "y"))}
    # d2/dx_i dx_j = 6 x_i y [i == j]; d2/dx_i dy = 3 x_i^2; d2/dy2 = 0
    assert rows == {"x[0]": ["18", "0", "3"], "x[1]": ["0", "36", "12"], "y": ["3", "12", "0"]}
    assert status == 0 and "∂²value/∂(x, y)²" in shown


def test_a_matrix_variable_gradient_is_a_matrix():
    status, shown, _ = on_terminal(["grad", "sum(A^2)", "--at", "A=[[1,2],[3,4]]"])
    assert status == 0
    lines = [line.split() for line in shown.split("∂value/∂A", 1)[1].splitlines() if line.strip()]
    assert lines[0] == ["A[:,0]", "A[:,1]"] and lines[2:] == [["A[0,:]", "2", "4"], ["A[1,:]", "6", "8"]]


# ---------------------------------------------------------------- points on a terminal (item 8)


def test_points_on_a_terminal_show_their_inputs_beside_the_results(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,x,y\n" + "".join(f"p{i},{i},{i / 4}\n" for i in range(25)))
    status, shown, _ = on_terminal(["grad", "x^2 * y", "--points", str(path), "--keep", "id"])
    lines = [line.split() for line in shown.splitlines() if line.strip() and "─" not in line]
    assert status == 0 and lines[0] == ["id", "x", "y", "value", "d/dx", "d/dy"]
    i = 7  # value x^2 y, d/dx 2xy, d/dy x^2
    assert lines[1 + i] == [f"p{i}", "7", "1.75", f"{49 * 1.75:g}", f"{2 * 7 * 1.75:g}", "49"]
    assert len(lines) == 1 + 20 + 1 and " ".join(lines[-1]) == "… and 5 more points (use --format csv or ndjson for all)"


def test_a_constant_from_at_is_not_repeated_as_an_input_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x\n1\n2\n")
    status, shown, _ = on_terminal(["grad", "x*y", "--points", str(path), "--at", "y=5"])
    lines = [line.split() for line in shown.splitlines() if line.strip() and "─" not in line]
    assert status == 0 and lines == [["x", "value", "d/dx", "d/dy"], ["1", "5", "5", "1"], ["2", "10", "5", "2"]]
    path.write_text("x,y\n1,5\n2,3\n")  # a point's own y wins over --at, so it is shown
    status, shown, _ = on_terminal(["grad", "x*y", "--points", str(path), "--at", "y=5"])
    assert shown.split()[:5] == ["x", "y", "value", "d/dx", "d/dy"]
