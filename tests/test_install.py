"""`pip install .` into a fresh virtual environment gives a working `diffcli`
from any directory: the wheel carries the grammar file inside the package."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_in_a_fresh_venv_runs_from_a_temporary_directory(tmp_path):
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                 cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("diffcli-*.whl")

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path).returncode == 0
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    installed = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run([str(bin_dir / "diffcli"), "grad", "cos(x) + sin(x)", "--at", "x=2"], cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["gradient"]["x"] == -math.sin(2) + math.cos(2)

    # The grammar it loaded is the copy inside the installed package, not this checkout's.
    where = _run([str(bin_dir / "python"), "-c",
                  "from diffcli.language.parse import grammar_path; print(grammar_path())"], cwd=elsewhere)
    grammar = Path(where.stdout.strip())
    assert venv in grammar.parents and grammar.parent.name == "grammars"
    assert grammar.read_text() == (REPO / "grammars" / "diffcli.lark").read_text()
