"""Many points: every input format x every output format, chunking invariance,
bad records, gzip, stdin, real pipes, `head` closing the pipe, a million points."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli import cli as cli_module
from diffcli.cli import cli

REPO = Path(__file__).resolve().parent.parent
EXPR = "x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2)"


def _points(n=25, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}


def _expected(points, expression=EXPR):
    return diffcli.compile(expression).grad(points, batch_ndim=1)


def write_points(path: Path, points: dict, fmt: str, extra: dict | None = None):
    names = list(points) + list(extra or {})
    n = len(next(iter(points.values())))
    columns = {**points, **(extra or {})}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as f:
        if fmt in ("csv", "tsv"):
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            w.writerow(names)
            for i in range(n):
                w.writerow([repr(float(columns[k][i])) if k in points else columns[k][i] for k in names])
        else:
            records = [{k: (float(columns[k][i]) if k in points else columns[k][i]) for k in names}
                       for i in range(n)]
            if fmt == "ndjson":
                f.write("".join(json.dumps(r) + "\n" for r in records))
            else:
                json.dump(records, f, indent=1)


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def parse_output(text: str, fmt: str):
    """(values, gradients) arrays from any output format."""
    if fmt in ("ndjson", "json"):
        records = [json.loads(line) for line in text.splitlines()] if fmt == "ndjson" else json.loads(text)
        return (np.array([r["value"] for r in records]),
                {k: np.array([r["gradient"][k] for r in records]) for k in "xyz"})
    if fmt == "quiet":
        rows = np.array([[float(v) for v in line.split("\t")] for line in text.splitlines()])
        return None, {k: rows[:, i] for i, k in enumerate("xyz")}
    rows = list(csv.DictReader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t"))
    return (np.array([float(r["value"]) for r in rows]),
            {k: np.array([float(r[f"d/d{k}"]) for r in rows]) for k in "xyz"})


@pytest.mark.parametrize("in_fmt", ["csv", "tsv", "ndjson", "json"])
@pytest.mark.parametrize("out_fmt", ["ndjson", "json", "csv", "tsv", "quiet"])
def test_every_input_format_to_every_output_format(tmp_path, in_fmt, out_fmt):
    points = _points()
    path = tmp_path / f"points.{in_fmt}"
    write_points(path, points, in_fmt)
    args = ["grad", EXPR, "--points", str(path)] + (["-q"] if out_fmt == "quiet" else ["--format", out_fmt])
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    values, grads = parse_output(result.stdout, out_fmt)
    expected = _expected(points)
    if values is not None:
        np.testing.assert_array_equal(values, expected.value)  # shortest repr round-trips exactly
    for k in "xyz":
        np.testing.assert_array_equal(grads[k], expected[k])


def _read_until(fd: int, wanted: bytes, seconds: float) -> bytes:
    """What the pty gives until wanted appears (or the time is up, or it closes)."""
    import select
    import time

    got, deadline = b"", time.monotonic() + seconds
    while wanted not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            got += data
    return got


def test_a_terminal_table_shows_the_first_rows_while_the_input_is_still_open(tmp_path):
    """Through a real pty: the table of the first points is drawn once the first
    chunks are done, before the rest of the input has even been written; the count
    of the rest comes at the end."""
    import pty

    points = _points(n=40_000, seed=9)  # 2.4 MB of CSV: more than one 2 MiB block
    write_points(tmp_path / "p.csv", points, "csv")
    text = (tmp_path / "p.csv").read_bytes()
    command, env = _real_command()
    master, slave = pty.openpty()
    proc = subprocess.Popen(command + ["grad", EXPR, "--points", "-", "--in", "csv", "--digits", "6",
                                       "--chunk", "1000", "--color", "never"],
                            stdin=subprocess.PIPE, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    try:
        proc.stdin.write(text)
        proc.stdin.flush()  # and the input stays open: no more points, no end either
        first = _expected({k: v[:1] for k, v in points.items()})
        shown = _read_until(master, f"{first['z'][0]:.6g}".encode(), 60)  # the first row's last cell
        assert b"d/dz" in shown and f"{first.value[0]:.6g}".encode() in shown
        assert proc.poll() is None and b"more points" not in shown
        proc.stdin.write(text.split(b"\n", 1)[1])  # 40,000 more points, then the end
        proc.stdin.close()
        rest = _read_until(master, b"more points", 60)
        assert proc.wait(timeout=60) == 0
        assert "… and 79,980 more points".encode() in rest
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_table_on_a_terminal_shows_first_rows_and_counts_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_module, "_stdout_is_terminal", lambda: True)
    path = tmp_path / "p.csv"
    write_points(path, _points(n=30), "csv")
    points = _points(n=30)
    out = run("grad", EXPR, "--points", str(path), "--digits", "4").stdout
    assert out.splitlines()[1].split() == ["x", "y", "z", "value", "d/dx", "d/dy", "d/dz"]  # inputs beside results
    first = out.splitlines()[3].split()
    assert first[:3] == [f"{points[k][0]:.4g}" for k in "xyz"]
    assert "… and 10 more points" in out


def test_results_are_identical_whatever_the_chunk_size(tmp_path):
    points = _points(n=50)
    path = tmp_path / "p.ndjson"
    write_points(path, points, "ndjson")
    outputs = {run("grad", EXPR, "--points", str(path), "--csv", "--chunk", str(c)).stdout
               for c in (1, 3, 7, 50, 65536)}
    assert len(outputs) == 1


def test_gzip_input_is_read_transparently(tmp_path):
    points = _points()
    path = tmp_path / "p.csv.gz"
    write_points(path, points, "csv")
    result = run("grad", EXPR, "--points", str(path), "--nl")
    values, _ = parse_output(result.stdout, "ndjson")
    np.testing.assert_array_equal(values, _expected(points).value)


def test_format_is_sniffed_and_said(tmp_path):
    path = tmp_path / "points.data"
    write_points(path, _points(n=3), "tsv")
    result = run("eval", "x + y + z", "--points", str(path), "--csv")
    assert "reading --points as tsv (sniffed; --in chooses)" in result.stderr
    assert result.stdout.count("\n") == 4


def test_vector_variables_by_index_columns_and_by_literal(tmp_path):
    indexed = tmp_path / "a.csv"
    indexed.write_text("v[0],v[1],v[2],w\n1,2,3,2\n4,5,6,-1\n")
    literal = tmp_path / "b.csv"
    literal.write_text('v,w\n"[1, 2, 3]",2\n"[4,5,6]",-1\n')
    for path in (indexed, literal):
        doc = [json.loads(line) for line in run("grad", "w * sum(v^2)", "--points", str(path)).stdout.splitlines()]
        assert [d["value"] for d in doc] == [28.0, -77.0]
        assert [d["gradient"]["v"] for d in doc] == [[4.0, 8.0, 12.0], [-8.0, -10.0, -12.0]]


def test_csv_column_names_for_jacobians_and_vjps(tmp_path):
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": [1, 2], "y": 3}\n')
    header = run("jac", "x * y", "--points", str(path), "--csv").stdout.splitlines()[0]
    assert header == ("value[0],value[1],dvalue[0]/dx[0],dvalue[0]/dx[1],dvalue[1]/dx[0],"
                      "dvalue[1]/dx[1],dvalue[0]/dy,dvalue[1]/dy")
    out = run("vjp", "x * y", "--points", str(path), "--seed", "[1, 1]", "--csv").stdout.splitlines()
    assert out == ["value[0],value[1],vjp/dx[0],vjp/dx[1],vjp/dy", "3.0,6.0,3.0,3.0,3.0"]


def test_at_values_are_shared_and_a_points_own_value_wins(tmp_path):
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1}\n{"x": 2, "y": 5}\n')
    out = run("eval", "x * y", "--points", str(path), "--at", "y=10", "-q").stdout
    assert out == "10\n10\n"


def test_keep_copies_columns_to_join_results_back(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,x,note\nA,1,first\nB,2,\"a, b\"\n")
    assert run("eval", "x^2", "--points", str(path), "--csv", "--keep", "id").stdout == \
        "id,value\nA,1.0\nB,4.0\n"
    assert run("eval", "x^2", "--points", str(path), "--csv", "--keep-all").stdout == \
        'id,note,value\nA,first,1.0\nB,"a, b",4.0\n'
    assert run("eval", "x^2", "--points", str(path), "--nl", "--keep", "id").stdout == \
        '{"id": "A", "value": 1.0}\n{"id": "B", "value": 4.0}\n'


def test_bad_record_stops_after_writing_every_good_one(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x,y\n1,2\n3,4\n5,oops\n7,8\n")
    result = run("eval", "x + y", "--points", str(path), "-q")
    assert result.exit_code == 3
    assert result.stdout == "3\n7\n"
    assert "line 4: y: 'oops' is not a number" in result.stderr
    assert "stopped at the bad record on line 4 after 2 good points" in result.stderr


def test_skip_bad_writes_error_records_or_counts_them(tmp_path):
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1}\n{"x": "a"}\n{"y": 1}\nnot json\n{"x": [1, 2]}\n{"x": 4}\n')
    result = run("eval", "x * 2", "--points", str(path), "--skip-bad", "--nl")
    assert result.exit_code == 3
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"value": 2.0} and lines[-1] == {"value": 8.0}
    assert [d["line"] for d in lines[1:-1]] == [2, 3, 4, 5]
    assert "no value for 'x'" in lines[2]["error"]
    csv_result = run("eval", "x * 2", "--points", str(path), "--skip-bad", "--csv")
    assert csv_result.exit_code == 3
    assert csv_result.stdout == "value\n2.0\n8.0\n"
    assert "skipped 4 bad records; wrote 2 points" in csv_result.stderr


@pytest.mark.parametrize("content,message", [
    ("x,z\n1,2\n", "line 1: the points have no column for 'y' and --at does not give it"),
    ("v[0],v[2],y\n1,2,3\n", "the columns for 'v' are incomplete: no column v[1]"),
    ("", "the points input is empty"),
])
def test_unusable_points_files(tmp_path, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content)
    result = run("eval", "x + y" if "v" not in content else "sum(v) + y", "--points", str(path))
    assert result.exit_code == 3
    assert message in result.stderr


def test_missing_points_file_is_a_clear_error():
    result = run("eval", "x", "--points", "/nonexistent/p.csv")
    assert result.exit_code == 3 and "cannot read points from /nonexistent/p.csv" in result.stderr


def test_nonfinite_conventions_per_format(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x\n1\n0\n-1\n")
    nd = run("grad", "log(x)", "--points", str(path), "--nl")
    assert [json.loads(line)["value"] for line in nd.stdout.splitlines()] == [0.0, None, None]
    assert "written as null" in nd.stderr
    assert "warning: line 3: log produced -inf (input 0.0)" in nd.stderr
    assert run("grad", "log(x)", "--points", str(path), "--csv").stdout == \
        "value,d/dx\n0.0,1.0\n-inf,inf\nnan,-1.0\n"


def test_one_point_in_machine_formats():
    assert run("grad", "x*y", "--at", "x=2,y=3", "--csv").stdout == "value,d/dx,d/dy\n6.0,3.0,2.0\n"
    assert run("grad", "x*y", "--at", "x=2,y=3", "--nl").stdout == \
        '{"value": 6.0, "gradient": {"x": 3.0, "y": 2.0}}\n'


def test_two_output_formats_are_refused():
    result = run("eval", "1", "--csv", "--json")
    assert result.exit_code == 2 and "choose one output format" in result.stderr


# ---------------------------------------------------------------- real processes and pipes

def _command():
    exe = shutil.which("diffcli")
    return exe if exe else f"{sys.executable} -m diffcli"


def _env():
    env = dict(os.environ)
    if not shutil.which("diffcli"):
        env["PYTHONPATH"] = str(REPO)
    return env


def _bash(script, tmp_path, timeout=120):
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=timeout)


def test_round_trip_through_a_real_pipe(tmp_path):
    write_points(tmp_path / "p.csv", _points(n=20), "csv")
    d = _command()
    proc = _bash(f"set -o pipefail; {d} eval '[x, y^2]' --points p.csv --csv | "
                 f"{d} grad 'value[0] * value[1]' --points - --in csv --csv --keep-all", tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    points = _points(n=20)
    np.testing.assert_array_equal([float(r["value"]) for r in rows], points["x"] * points["y"] ** 2)
    np.testing.assert_array_equal([float(r["d/dvalue[0]"]) for r in rows], points["y"] ** 2)


def test_head_closing_the_pipe_is_quiet(tmp_path):
    """Under pipefail the pipeline's status is diffcli's: 0, documented in the README."""
    write_points(tmp_path / "p.csv", _points(n=200_000), "csv")
    proc = _bash(f"set -o pipefail; {_command()} grad '{EXPR}' --points p.csv --csv --chunk 1000 "
                 f"| head -1", tmp_path)
    assert proc.stdout == "value,d/dx,d/dy,d/dz\n"
    assert proc.stderr == ""
    assert proc.returncode == 0


def test_stdin_is_not_read_unless_asked(tmp_path):
    """An open, silent stdin (as under cron or a CI runner) must not hang a one-point command."""
    proc = subprocess.Popen([*_command().split(), "grad", "x^2", "--at", "x=3", "-q"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path, env=_env(), text=True)
    try:
        proc.wait(timeout=60)  # stdin stays open the whole time: reading it would hang here
    finally:
        proc.stdin.close()
        out = proc.stdout.read()
        proc.stdout.close()
        proc.stderr.close()
    assert out == "6\n" and proc.returncode == 0


def test_a_million_points_in_a_subprocess(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(7)
    x, y, z = rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    np.savetxt(tmp_path / "p.csv", np.column_stack([x, y, z]), delimiter=",", header="x,y,z",
               comments="", fmt="%.17g")
    proc = _bash(f"{_command()} grad '{EXPR}' --points p.csv --csv > out.csv", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1)
    assert out.shape == (n, 4)
    r = np.sqrt(x**2 + y**2 + z**2)
    sample = rng.choice(n, 1000, replace=False)
    value = x * y + np.sin(y) * z + np.log(x) * np.exp(-z) + r
    dx = y + np.exp(-z) / x + x / r
    dy = x + np.cos(y) * z + y / r
    dz = np.sin(y) - np.log(x) * np.exp(-z) + z / r
    for column, expected in zip(out.T, (value, dx, dy, dz)):
        np.testing.assert_allclose(column[sample], expected[sample], rtol=1e-13, atol=1e-14)


def test_the_cli_offers_every_input_format_points_reads():
    from diffcli.io.points import FORMATS

    assert tuple(cli_module.INPUT_FORMATS) == FORMATS


def test_one_point_in_csv_for_every_kind_of_result():
    assert run("hess", "x*y", "--at", "x=1,y=2", "--csv").stdout.splitlines() == [
        "value,d2/dxdx,d2/dxdy,d2/dydx,d2/dydy", "2.0,0.0,1.0,1.0,0.0"]
    assert run("grad", "x^3", "--at", "x=2", "--order", "2", "--csv").stdout.splitlines() == [
        "value,d2/dxdx", "8.0,12.0"]
    assert run("jvp", "[x*y, y]", "--at", "x=1,y=2", "--tangent", "x=1", "--csv").stdout.splitlines() == [
        "value[0],value[1],jvp[0],jvp[1]", "2.0,2.0,2.0,0.0"]


@pytest.mark.parametrize("content,message", [
    (b"x\n1\n\xff\xfe\n", "not UTF-8"),
    (lambda: (lambda data: data[:len(data) // 2])(gzip.compress(
        ("x\n" + "".join(f"{float(v)!r}\n" for v in np.random.default_rng(0).uniform(size=20_000))).encode())),
     "cannot read the points"),
])
def test_unreadable_points_are_bad_data_not_a_crash(tmp_path, content, message):
    content = content() if callable(content) else content  # a truncated .gz, made at run time
    path = tmp_path / ("p.csv.gz" if content[:2] == b"\x1f\x8b" else "p.csv")
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["eval", "x", "--points", str(path), "-q"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 3 and message in result.stderr


def test_a_default_of_another_shape_is_a_bad_record(tmp_path):
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1}\n{}\n')
    result = run("eval", "x * 2", "--points", str(path), "--at", "x=[1, 2]", "--skip-bad", "--nl")
    assert result.exit_code == 3
    assert json.loads(result.stdout.splitlines()[1])["line"] == 2


def test_line_numbers_count_leading_blank_lines(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("\n\nx\n1\nbad\n")
    result = run("eval", "x", "--points", str(path), "-q")
    assert result.exit_code == 3 and "line 5: x: 'bad' is not a number" in result.stderr


# ---------------------------------------------------------------- the columnar CSV / TSV path (issue 15)


def _real_command():
    from tests.test_cli import _diffcli_command, _env
    return _diffcli_command(), _env()


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_awkward_floats_go_through_the_real_command_bit_for_bit(tmp_path, fmt):
    """Every float64 (signed zeros, subnormals, 1e308, both sides of 1e-4 and 1e16,
    nan and inf, random bit patterns) read by Arrow and written back as exactly
    Python's repr, so NumPy reads back the same bits."""
    from tests.test_render import _awkward_floats

    numbers = _awkward_floats(n_random=5000)
    path = tmp_path / f"p.{fmt}"
    path.write_text("x\n" + "".join(repr(v) + "\n" for v in numbers.tolist()))
    command, env = _real_command()
    proc = subprocess.run(command + ["eval", "x", "--points", str(path), "--format", fmt], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "value\n" + "".join(repr(v) + "\n" for v in numbers.tolist())
    back = np.loadtxt(io.StringIO(proc.stdout), skiprows=1)
    finite = ~np.isnan(numbers)
    assert np.array_equal(back[finite].view(np.uint64), numbers[finite].view(np.uint64))
    assert np.isnan(back[~finite]).all()


def test_results_are_identical_whatever_the_chunk_and_block_sizes(tmp_path, monkeypatch):
    """Arrow's blocks and the evaluator's chunks cut anywhere: the same text, and the
    same as the careful (NDJSON) reader's; a blank line and CRLF endings included."""
    from diffcli.io import points as points_module

    points = _points(n=300)
    write_points(tmp_path / "p.csv", points, "csv")
    write_points(tmp_path / "p.tsv", points, "tsv")
    write_points(tmp_path / "p.ndjson", points, "ndjson")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    (tmp_path / "crlf.csv").write_text("\r\n".join(lines[:100] + [""] + lines[100:]) + "\r\n", newline="")
    reference = run("grad", EXPR, "--points", str(tmp_path / "p.ndjson"), "--csv").stdout
    assert reference.count("\n") == 301
    for block, piece in [(points_module.ARROW_BLOCK, points_module.READ_PIECE), (64, 16), (1000, 100)]:
        monkeypatch.setattr(points_module, "ARROW_BLOCK", block)
        monkeypatch.setattr(points_module, "READ_PIECE", piece)
        for name in ("p.csv", "p.tsv", "crlf.csv"):
            for chunk in (1, 7, 64, 65536):
                result = run("grad", EXPR, "--points", str(tmp_path / name), "--csv", "--chunk", str(chunk))
                assert result.exit_code == 0, result.stderr
                assert result.stdout == reference, (block, name, chunk)


BAD_RECORDS = {
    "not a number": (b"1.5,oops,0.25", "line 50002: y: 'oops' is not a number"),
    "a short row": (b"1.5,0.5", "line 50002: expected 3 fields, found 2"),
    "not UTF-8": (b"1.5,0.5,\xff", "line 50002: not UTF-8 text (byte 0xff at byte offset 8 of the line"),
}


@pytest.mark.parametrize("kind", BAD_RECORDS)
def test_a_bad_record_in_the_middle_of_100000_rows(tmp_path, kind):
    """Arrow rejects the block; the careful path names the exact line, and every good
    record before it is written (exit 3), through the real command."""
    bad, message = BAD_RECORDS[kind]
    points = _points(n=100_000, seed=5)
    path = tmp_path / "p.csv"
    write_points(path, points, "csv")
    data = path.read_bytes().split(b"\n")
    data[50_001] = bad  # line 50,002: the header is line 1
    path.write_bytes(b"\n".join(data))
    command, env = _real_command()
    proc = subprocess.run(command + ["grad", EXPR, "--points", str(path), "--csv"], capture_output=True,
                          env=env, timeout=120)
    stderr = proc.stderr.decode()
    assert proc.returncode == 3, stderr
    assert message in stderr and "after 50,000 good points" in stderr
    values, grads = parse_output(proc.stdout.decode(), "csv")
    good = {k: v[:50_000] for k, v in points.items()}
    expected = _expected(good)
    np.testing.assert_array_equal(values, expected.value)
    for k in "xyz":
        np.testing.assert_array_equal(grads[k], expected[k])


def test_skip_bad_goes_on_with_the_fast_reader_after_a_bad_block(tmp_path):
    points = _points(n=20_000, seed=6)
    path = tmp_path / "p.csv"
    write_points(path, points, "csv")
    lines = path.read_text().split("\n")
    lines[10] = "1,2"
    path.write_text("\n".join(lines))
    result = run("grad", EXPR, "--points", str(path), "--csv", "--skip-bad")
    assert result.exit_code == 3
    assert "line 11: expected 3 fields, found 2" in result.stderr
    values, _ = parse_output(result.stdout, "csv")
    keep = np.arange(20_000) != 9
    np.testing.assert_array_equal(values, _expected({k: v[keep] for k, v in points.items()}).value)


def test_a_good_file_never_takes_the_careful_path_and_a_bad_one_only_for_its_block(tmp_path, monkeypatch):
    from diffcli.io import points as points_module

    calls = []
    careful = points_module._DelimitedReader._careful_chunks
    monkeypatch.setattr(points_module._DelimitedReader, "_careful_chunks",
                        lambda self, lines, line: calls.append(line) or careful(self, lines, line))
    monkeypatch.setattr(points_module, "ARROW_BLOCK", 4096)
    monkeypatch.setattr(points_module, "READ_PIECE", 1024)
    points = _points(n=2000)
    path = tmp_path / "p.csv"
    write_points(path, points, "csv")
    assert run("grad", EXPR, "--points", str(path), "--csv").exit_code == 0
    assert calls == []
    lines = path.read_text().split("\n")
    lines[1500] = "1,2,x"
    path.write_text("\n".join(lines))
    result = run("grad", EXPR, "--points", str(path), "--csv", "--skip-bad")
    assert "line 1501: z: 'x' is not a number" in result.stderr
    assert len(calls) == 1 and 1 < calls[0] < 1501 and result.stdout.count("\n") == 2000


def _reader_tiers(monkeypatch):
    """Which reader each block went through: 'polars', 'pyarrow' or 'careful'."""
    from diffcli.io import points as points_module

    tiers = []
    blocks = points_module._ArrowBlocks
    for name, tier in [("_polars_columns", "polars"), ("_pyarrow_columns", "pyarrow")]:
        original = getattr(blocks, name)
        monkeypatch.setattr(blocks, name, lambda self, data, rows, original=original, tier=tier: (
            tiers.append(tier), original(self, data, rows))[1])
    careful = points_module._DelimitedReader._careful_chunks
    monkeypatch.setattr(points_module._DelimitedReader, "_careful_chunks",
                        lambda self, lines, line: tiers.append("careful") or careful(self, lines, line))
    monkeypatch.setattr(points_module, "ARROW_BLOCK", 4096)
    monkeypatch.setattr(points_module, "READ_PIECE", 1024)
    return tiers


def test_polars_reads_a_good_file_and_an_empty_unused_cell_goes_to_pyarrow_not_the_careful_path(
        tmp_path, monkeypatch):
    tiers = _reader_tiers(monkeypatch)
    points = _points(n=2000)
    ids = np.array([f"p{i}" if i != 1200 else "" for i in range(2000)], dtype=object)
    path = tmp_path / "p.csv"
    write_points(path, points, "csv", {"id": ids})
    result = run("grad", EXPR, "--points", str(path), "--csv")
    assert result.exit_code == 0, result.stderr
    values, _ = parse_output(result.stdout, "csv")
    np.testing.assert_array_equal(values, _expected(points).value)
    assert tiers.count("pyarrow") == 1 and "careful" not in tiers  # only the block with the empty id
    assert tiers.count("polars") > 10


@pytest.mark.parametrize("line, message", [
    ("1,2,3,4", "line 1501: expected 3 fields, found 4"),  # polars reads every column: a long row is an error
    ("1,2", "line 1501: expected 3 fields, found 2"),  # a short row is nulls to polars, an error to pyarrow
    ("1,,3", "line 1501: y: '' is not a number"),
    ("", None),  # a blank line: nulls to polars, a row count that differs to pyarrow; the careful path skips it
])
def test_a_bad_row_on_the_polars_path_is_named_by_the_careful_path(tmp_path, monkeypatch, line, message):
    tiers = _reader_tiers(monkeypatch)
    points = _points(n=2000)
    path = tmp_path / "p.csv"
    write_points(path, points, "csv")
    lines = path.read_text().split("\n")
    lines.insert(1500, line)
    path.write_text("\n".join(lines))
    result = run("grad", EXPR, "--points", str(path), "--csv")
    assert tiers.count("careful") == 1
    values, _ = parse_output(result.stdout, "csv")
    if message is None:
        assert result.exit_code == 0
        np.testing.assert_array_equal(values, _expected(points).value)
        return
    assert result.exit_code == 3 and message in result.stderr
    np.testing.assert_array_equal(values, _expected({k: v[:1499] for k, v in points.items()}).value)


def test_blocks_are_read_as_bytes_unless_the_header_outgrows_what_is_buffered(tmp_path, monkeypatch):
    """The header is taken from the bytes the stream holds, so the blocks are read
    as bytes (no decoding); a header longer than the buffer is read as text, and so
    are the blocks after it. Lone \\r and \\r\\n line ends, blocks cut anywhere:
    the same output every way."""
    from diffcli.io import points as points_module

    text_reads = []
    original = points_module._ArrowBlocks._text_blocks
    monkeypatch.setattr(points_module._ArrowBlocks, "_text_blocks",
                        lambda self: text_reads.append(1) or original(self))
    points = _points(n=500, seed=8)
    write_points(tmp_path / "p.csv", points, "csv")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    (tmp_path / "cr.csv").write_bytes(("\r".join(lines) + "\r").encode())
    (tmp_path / "crlf.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    wide = "pad_" + "_" * 20_000  # an unused column whose name is longer than a read buffer
    (tmp_path / "wide.csv").write_text("\n".join([lines[0] + "," + wide] + [f"{row},0" for row in lines[1:]]) + "\n")
    reference = run("grad", EXPR, "--points", str(tmp_path / "p.csv"), "--csv").stdout
    assert reference.count("\n") == 501 and text_reads == []
    monkeypatch.setattr(points_module, "ARROW_BLOCK", 2048)
    monkeypatch.setattr(points_module, "READ_PIECE", 512)
    for name in ("cr.csv", "crlf.csv"):
        result = run("grad", EXPR, "--points", str(tmp_path / name), "--csv", "--chunk", "7")
        assert result.exit_code == 0 and result.stdout == reference, name
    assert text_reads == []
    result = run("grad", EXPR, "--points", str(tmp_path / "wide.csv"), "--csv")
    assert result.exit_code == 0 and result.stdout == reference
    assert text_reads == [1]


def test_a_csv_run_without_kept_columns_imports_no_pyarrow(tmp_path):
    """CSV in and out is polars' job alone: pyarrow's import (0.04-0.2 s) is not paid."""
    points = _points(n=3000)
    path = tmp_path / "p.csv"
    write_points(path, points, "csv")
    code = (f"import sys, runpy; sys.argv = ['diffcli', 'grad', {EXPR!r}, '--points', {str(path)!r}, '--csv']\n"
            "try:\n    runpy.run_module('diffcli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'polars'}), file=sys.stderr)")
    _, env = _real_command()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.count("\n") == 3001
    assert proc.stderr == "['polars']\n"


@pytest.mark.parametrize("keep", [["--keep", "id", "--keep", "note"], ["--keep-all"]])
@pytest.mark.parametrize("out", ["csv", "tsv", "ndjson", "json"])
def test_kept_columns_on_the_arrow_path_are_the_careful_path_s_text(tmp_path, monkeypatch, keep, out):
    """Quoted delimiters, doubled quotes, empty cells, spaces and non-ASCII text in
    kept columns: the Arrow blocks give exactly what the csv module gives."""
    from diffcli.io import points as points_module

    notes = ['"a,b"', '"say ""hi"""', "", "  spaced ", "naïve", "plain"]
    rows = ["id,x,note,y,z"] + [f"p{i},{i / 3 + 0.5!r},{notes[i % len(notes)]},{-i / 7!r},{i / 11!r}"
                                for i in range(3000)]
    path = tmp_path / "p.csv"
    path.write_text("\n".join(rows) + "\n")
    args = ["grad", EXPR, "--points", str(path), "--format", out, *keep]
    monkeypatch.setattr(points_module, "ARROW_BLOCK", 20_000)
    monkeypatch.setattr(points_module, "READ_PIECE", 4096)
    parse, parsed = points_module._ArrowBlocks._parse, []
    monkeypatch.setattr(points_module._ArrowBlocks, "_parse",
                        lambda self, text: parsed.append(parse(self, text)) or parsed[-1])
    fast = run(*args, "--chunk", "1000")
    assert fast.exit_code == 0, fast.stderr
    assert len(parsed) > 3 and all(p is not None for p in parsed)  # every block through Arrow
    monkeypatch.setattr(points_module._ArrowBlocks, "_parse", lambda self, text: None)
    careful = run(*args)
    assert careful.exit_code == 0
    assert fast.stdout == careful.stdout
    assert "p2999" in fast.stdout and ("naïve" in fast.stdout or "na\\u00efve" in fast.stdout)


def _compress(data: bytes, kind: str) -> bytes:
    import bz2

    import pyarrow as pa

    if kind == "gz":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    return pa.compress(data, codec="zstd", asbytes=True)


@pytest.mark.parametrize("kind", ["gz", "bz2", "zst"])
@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_compressed_inputs_are_recognised_by_their_magic_bytes(tmp_path, kind, fmt):
    points = _points(n=2000)
    plain = tmp_path / f"p.{fmt}"
    write_points(plain, points, fmt)
    reference = run("grad", EXPR, "--points", str(plain), "--csv").stdout
    named = tmp_path / f"p.{fmt}.{kind}"
    named.write_bytes(_compress(plain.read_bytes(), kind))
    anonymous = tmp_path / "points"
    anonymous.write_bytes(named.read_bytes())
    assert run("grad", EXPR, "--points", str(named), "--csv").stdout == reference
    sniffed = run("grad", EXPR, "--points", str(anonymous), "--csv")
    assert sniffed.stdout == reference and f"reading --points as {fmt} (sniffed" in sniffed.stderr
    assert run("grad", EXPR, "--points", "-", "--in", fmt, "--csv", input=named.read_bytes()).stdout == reference


@pytest.mark.parametrize("kind", ["bz2", "zst"])
def test_a_truncated_compressed_input_keeps_the_records_before_the_cut(tmp_path, kind):
    data = b"x\n" + b"".join(b"%d\n" % i for i in range(400_000))
    packed = _compress(data, kind)
    path = tmp_path / f"p.csv.{kind}"
    path.write_bytes(packed[:len(packed) // 2])
    result = run("eval", "x", "--points", str(path), "--csv")
    assert result.exit_code == 3 and "cannot read the points" in result.stderr
    values = [float(v) for v in result.stdout.split()[1:]]
    assert values and values == [float(i) for i in range(len(values))]
