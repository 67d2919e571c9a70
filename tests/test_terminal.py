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
    """SIGINT half a second into drawing a million samples (a few seconds of
    work) ends the run at once with status 130 and 'interrupted'."""
    master, slave = _pty(80, 24)
    env = dict(_env(), NO_COLOR="1")
    proc = subprocess.Popen(_diffcli_command() + ["plot", "tan(x) * exp(sin(x))", "--over", "x=-3:3",
                                                  "--samples", "1000000", "--order", "3"],
                            stdout=slave, stderr=subprocess.PIPE, env=env, cwd=REPO)
    os.close(slave)
    try:
        time.sleep(1.0)
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
