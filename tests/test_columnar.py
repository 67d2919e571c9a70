"""Parquet and Arrow IPC (file and stream) points in and out (columnar.py),
through the real command where it matters, compared bit for bit."""

from __future__ import annotations

import datetime
import gzip
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import diffcli
from diffcli import cli as cli_module
from diffcli.cli import cli
from tests.test_cli import REPO, _diffcli_command, _env, interrupted_after_first_output
from tests.test_render import _awkward_floats

EXPR = "x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2)"
LABELS = ["value", "d/dx", "d/dy", "d/dz"]


def _points(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": rng.uniform(-1, 1, n)}


def _expected(points):
    result = diffcli.compile(EXPR).grad(points, batch_ndim=1)
    return [result.value, result["x"], result["y"], result["z"]]


def _write(table: pa.Table, path, fmt: str, row_group=700):
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=row_group)
    else:
        with pa.OSFile(str(path), "wb") as sink, \
                (pa.ipc.new_file if fmt == "arrow" else pa.ipc.new_stream)(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=row_group):
                writer.write_batch(batch)


def _read(data: bytes, fmt: str) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    return (pa.ipc.open_file if fmt == "arrow" else pa.ipc.open_stream)(pa.py_buffer(data)).read_all()


def _real(args, stdin=None):
    return subprocess.run(_diffcli_command() + args, input=stdin, capture_output=True, env=_env(), timeout=120)


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def _same_bits(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    keep = ~np.isnan(want)
    assert np.array_equal(got[keep].view(np.uint64), want[keep].view(np.uint64))


@pytest.mark.parametrize("suffix, fmt", [(".parquet", "parquet"), (".arrow", "arrow"), (".feather", "arrow"),
                                         (".arrows", "arrows")])
@pytest.mark.parametrize("out", ["csv", "parquet", "arrow", "arrows"])
def test_every_binary_input_to_every_binary_output_through_the_real_command(tmp_path, suffix, fmt, out):
    points = _points()
    path = tmp_path / f"p{suffix}"
    _write(pa.table(points), path, fmt)
    proc = _real(["grad", EXPR, "--points", str(path), "--format", out])
    assert proc.returncode == 0, proc.stderr.decode()
    want = _expected(points)
    if out == "csv":
        rows = np.loadtxt(io.StringIO(proc.stdout.decode()), delimiter=",", skiprows=1)
        assert proc.stdout.decode().startswith(",".join(LABELS) + "\n")
        got = [rows[:, j] for j in range(4)]
    else:
        table = _read(proc.stdout, out)
        assert table.column_names == LABELS and all(t == pa.float64() for t in table.schema.types)
        got = [table.column(j).to_numpy() for j in range(4)]
    for g, w in zip(got, want):
        _same_bits(g, w)


def test_an_arrow_stream_on_a_pipe_in_and_out_awkward_floats_bit_for_bit():
    """--in arrow on stdin (a pipe: not seekable), --format arrows on stdout:
    signed zeros, subnormals, 1e308, nan and inf pass unchanged."""
    numbers = _awkward_floats(n_random=3000)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, pa.schema([("x", pa.float64())])) as writer:
        writer.write_table(pa.table({"x": numbers}), max_chunksize=1000)
    proc = _real(["eval", "x", "--points", "-", "--in", "arrow", "--format", "arrows", "--chunk", "777"],
                 stdin=sink.getvalue())
    assert proc.returncode == 0, proc.stderr.decode()
    _same_bits(_read(proc.stdout, "arrows").column("value").to_numpy(), numbers)


def test_parquet_out_and_back_in_is_the_csv_path_s_text(tmp_path):
    points = _points()
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("x,y,z\n" + "".join(f"{x!r},{y!r},{z!r}\n" for x, y, z in zip(*(v.tolist() for v in points.values()))))
    reference = run("grad", EXPR, "--points", str(csv_path), "--csv").stdout
    to_parquet = _real(["eval", "[x, y, z]", "--points", str(csv_path), "--format", "parquet"])
    table = _read(to_parquet.stdout, "parquet")
    assert table.column_names == ["value"] and table.schema.field("value").type == pa.list_(pa.float64(), 3)
    (tmp_path / "q.parquet").write_bytes(to_parquet.stdout)
    rows = table.column("value").combine_chunks().flatten().to_numpy().reshape(-1, 3)
    pq.write_table(pa.table({k: rows[:, i] for i, k in enumerate("xyz")}), tmp_path / "r.parquet")
    for chunk in ("1", "333", "65536"):
        assert run("grad", EXPR, "--points", str(tmp_path / "r.parquet"), "--csv", "--chunk", chunk).stdout \
            == reference
    back = run("eval", "value[0] + 2 * value[2]", "--points", str(tmp_path / "q.parquet"), "-q")  # the list column
    assert back.exit_code == 0
    assert back.stdout == "".join(f"{v!r}\n" for v in (points["x"] + 2 * points["z"]).tolist())


def test_list_columns_and_indexed_columns_give_vector_variables(tmp_path):
    lists = pa.table({"v": pa.array([[1.0, 2, 3], [4, 5, 6]], pa.list_(pa.float64())), "w": [2, -1]})
    fixed = pa.table({"v": pa.array([[1.0, 2, 3], [4, 5, 6]], pa.list_(pa.float64(), 3)), "w": [2.0, -1]})
    indexed = pa.table({"v[0]": [1, 4], "v[1]": [2, 5], "v[2]": [3, 6], "w": [2, -1]})
    for name, table in [("lists", lists), ("fixed", fixed), ("indexed", indexed)]:
        pq.write_table(table, tmp_path / f"{name}.parquet")
        result = run("grad", "w * sum(v^2)", "--points", str(tmp_path / f"{name}.parquet"), "--nl")
        doc = [json.loads(line) for line in result.stdout.splitlines()]
        assert [d["value"] for d in doc] == [28.0, -77.0], name
        assert [d["gradient"]["v"] for d in doc] == [[4.0, 8.0, 12.0], [-8.0, -10.0, -12.0]], name


def test_a_null_in_the_middle_stops_after_every_good_row_with_its_row_number(tmp_path):
    points = _points(n=100_000, seed=4)
    y = pa.array(points["y"], mask=np.arange(100_000) == 50_000)
    pq.write_table(pa.table({"x": points["x"], "y": y, "z": points["z"]}), tmp_path / "p.parquet",
                   row_group_size=30_000)
    proc = _real(["grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--format", "parquet"])
    assert proc.returncode == 3
    assert "row 50001: y: no value (null)" in proc.stderr.decode()  # binary files have rows, not lines
    assert "after 50,000 good points" in proc.stderr.decode()
    table = _read(proc.stdout, "parquet")
    good = {k: v[:50_000] for k, v in points.items()}
    for j, want in enumerate(_expected(good)):
        _same_bits(table.column(j).to_numpy(), want)
    skipped = run("grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--csv", "--skip-bad")
    assert skipped.exit_code == 3 and skipped.stdout.count("\n") == 100_000


def test_a_column_of_the_wrong_type_is_named(tmp_path):
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": ["a", "b"], "z": [0.0, 1.0]}), tmp_path / "p.parquet")
    result = run("grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--csv")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "column 'y' holds string, not numbers" in result.stderr


def test_parquet_on_a_pipe_is_refused_with_a_reason(tmp_path):
    sink = io.BytesIO()
    pq.write_table(pa.table(_points(n=10)), sink)
    proc = _real(["grad", EXPR, "--points", "-", "--in", "parquet", "--csv"], stdin=sink.getvalue())
    assert proc.returncode == 3 and proc.stdout == b""
    assert "Parquet file keeps its index at its end: give its name, not stdin" in proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress(sink.getvalue()))
    packed = run("grad", EXPR, "--points", str(tmp_path / "p.parquet.gz"), "--csv")
    assert packed.exit_code == 3 and "not stdin or a compressed file" in packed.stderr


def test_kept_string_and_timestamp_columns_pass_through(tmp_path):
    points = _points(n=3)
    stamps = [datetime.datetime(2026, 12, 3, 12, i) for i in range(3)]
    table = pa.table({**points, "name": ["a", "b,c", "d"], "at": pa.array(stamps, pa.timestamp("s"))})
    pq.write_table(table, tmp_path / "p.parquet")
    out = _real(["grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--keep", "name", "--keep", "at",
                 "--format", "parquet"])
    back = _read(out.stdout, "parquet")
    assert back.column_names == ["name", "at"] + LABELS
    assert back.column("name").to_pylist() == ["a", "b,c", "d"]
    assert back.column("at").to_pylist() == stamps and pa.types.is_timestamp(back.schema.field("at").type)
    text = run("grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--keep", "name", "--keep", "at",
               "--csv").stdout
    assert text.splitlines()[2].startswith('"b,c",2026-12-03 12:01:00')
    nd = run("grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--keep-all", "--nl").stdout
    assert json.loads(nd.splitlines()[0])["name"] == "a"


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "arrows"])
def test_binary_output_is_refused_to_a_terminal(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(cli_module, "_stdout_is_terminal", lambda: True)
    pq.write_table(pa.table(_points(n=3)), tmp_path / "p.parquet")
    result = run("grad", EXPR, "--points", str(tmp_path / "p.parquet"), "--format", fmt)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--format {fmt} writes" in result.stderr and "stdout is a terminal" in result.stderr


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "arrows"])
def test_binary_output_into_head_is_quiet_and_a_full_disk_is_status_4(tmp_path, fmt):
    path = tmp_path / "p.csv"
    path.write_text("x\n" + "".join(f"{i / 7!r}\n" for i in range(200_000)))
    command = " ".join(_diffcli_command()) + f" grad 'x^2' --points {path} --format {fmt}"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command + " --chunk 1000 | head -c 100 > /dev/null"],
                          capture_output=True, env=_env(), timeout=120)
    assert proc.returncode == 0 and proc.stderr == b""
    proc = subprocess.run(["bash", "-c", command + " > /dev/full"], capture_output=True, env=_env(), timeout=120)
    assert proc.returncode == 4
    assert proc.stderr == b"diffcli: cannot write output: No space left on device\n"


@pytest.mark.parametrize("fmt", ["parquet", "arrows"])
def test_ctrl_c_leaves_a_readable_binary_file_of_whole_batches(tmp_path, fmt):
    """SIGINT mid-stream: the writer is closed (Parquet's footer, the IPC stream's end
    marker), so what was written reads back, status 130."""
    path = tmp_path / "p.csv"
    path.write_text("x\n" + "".join(f"{i / 7!r}\n" for i in range(400_000)))
    output = interrupted_after_first_output(["grad", "x^2", "--points", str(path), "--format", fmt,
                                             "--chunk", "1000"])
    table = _read(output, fmt)
    assert 0 < table.num_rows < 400_000 and table.num_rows % 1000 == 0
    x = np.arange(table.num_rows) / 7
    _same_bits(table.column("d/dx").to_numpy(), 2 * x)


def test_output_file_takes_its_format_from_its_extension(tmp_path):
    points = _points(n=1000)
    _write(pa.table(points), tmp_path / "p.parquet", "parquet")
    source = str(tmp_path / "p.parquet")
    to_stdout = run("grad", EXPR, "--points", source, "--csv").stdout
    for name, fmt in [("out.csv", "csv"), ("out.parquet", "parquet"), ("out.feather", "arrow"),
                      ("out.arrows", "arrows"), ("out.data", "csv")]:
        target = tmp_path / name
        extra = ["--format", "csv"] if name == "out.data" else []
        result = run("grad", EXPR, "--points", source, "--output", str(target), *extra)
        assert result.exit_code == 0 and result.stdout == "", result.stderr
        if fmt == "csv":
            assert target.read_text() == to_stdout
        else:
            table = _read(target.read_bytes(), fmt)
            for j, want in enumerate(_expected(points)):
                _same_bits(table.column(j).to_numpy(), want)
    one = run("grad", "sin(x)", "--at", "x=1", "-o", str(tmp_path / "one.json"))
    assert json.loads((tmp_path / "one.json").read_text())["gradient"]["x"] == 0.5403023058681398
    assert one.stdout == ""


def test_output_file_problems_are_usage_errors_before_any_work(tmp_path):
    unknown = run("grad", "x", "--at", "x=1", "--output", str(tmp_path / "out.xyz"))
    assert unknown.exit_code == 2 and "choose the format with --format" in unknown.stderr
    assert not (tmp_path / "out.xyz").exists()
    missing = run("grad", "x", "--at", "x=1", "--output", str(tmp_path / "no" / "such" / "out.csv"))
    assert missing.exit_code == 2 and "cannot write it: No such file or directory" in missing.stderr


@pytest.mark.parametrize("output, expected", [
    ("--json", '"gradient": {"x": 0.5403023058681398}'),
    ("--csv", "value,d/dx\n0.8414709848078965,0.5403023058681398\n"),
])
def test_one_point_imports_neither_arrow_nor_polars(tmp_path, output, expected):
    """pyarrow and polars serve --points only: a one-point request does not pay their start-up."""
    code = (f"import sys, runpy; sys.argv = ['diffcli', 'grad', 'sin(x)', '--at', 'x=1', '{output}'];\n"
            "try:\n    runpy.run_module('diffcli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'polars')), file=sys.stderr)")
    env = {**_env(), "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    assert expected in proc.stdout
    assert proc.stderr == "[]\n"


# ---------------------------------------------------------------- matrices: lists of lists in, nested lists out

def _matrix_points(n=1500, seed=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, 3)), rng.standard_normal((n, 3))


@pytest.mark.parametrize("kind", ["list", "large_list", "fixed_size_list"])
@pytest.mark.parametrize("fmt", ["parquet", "arrow", "arrows"])
def test_lists_of_lists_are_matrix_variables_and_jacobians_come_back_as_nested_lists(tmp_path, kind, fmt):
    """A (2, 3) matrix column and a 3-vector column in any list type; the Jacobian of
    A @ v is written as a fixed-size list of fixed-size lists, the value as a fixed-size
    list: what polars reads as Array columns. Bit for bit the NDJSON path's numbers,
    and A @ v as NumPy computes it."""
    A, v = _matrix_points()
    inner = {"list": pa.list_(pa.float64()), "large_list": pa.large_list(pa.float64()),
             "fixed_size_list": pa.list_(pa.float64(), 3)}[kind]
    outer = {"list": pa.list_(inner), "large_list": pa.large_list(inner),
             "fixed_size_list": pa.list_(inner, 2)}[kind]
    table = pa.table({"A": pa.array(A.tolist(), outer), "v": pa.array(v.tolist(), inner)})
    path = tmp_path / f"p.{fmt}"
    _write(table, path, "arrow" if fmt == "arrows" else fmt)
    proc = _real(["jac", "A @ v", "--points", str(path), "--format", "parquet", "--wrt", "A", "--wrt", "v",
                  "--chunk", "600"])
    assert proc.returncode == 0, proc.stderr.decode()
    out = _read(proc.stdout, "parquet")
    assert out.column_names == ["value", "dvalue/dA", "dvalue/dv"]
    assert out.schema.field("value").type == pa.list_(pa.float64(), 2)
    assert out.schema.field("dvalue/dv").type == pa.list_(pa.list_(pa.float64(), 3), 2)
    assert out.schema.field("dvalue/dA").type == pa.list_(pa.list_(pa.list_(pa.float64(), 3), 2), 2)  # (2, 2x3)
    import polars as pl

    frame = pl.read_parquet(io.BytesIO(proc.stdout))
    assert frame.schema["dvalue/dv"] == pl.Array(pl.Float64, (2, 3))
    np.testing.assert_allclose(frame["value"].to_numpy(), np.einsum("nij,nj->ni", A, v), rtol=1e-14, atol=1e-15)
    _same_bits(frame["dvalue/dv"].to_numpy(), A)  # d(A v)/dv = A
    nd = [json.loads(line) for line in run("jac", "A @ v", "--points", str(path), "--nl", "--wrt", "A",
                                           "--wrt", "v").stdout.splitlines()]
    _same_bits(frame["value"].to_numpy(), [r["value"] for r in nd])
    _same_bits(frame["dvalue/dA"].to_numpy(), [r["jacobian"]["A"] for r in nd])


def test_a_bad_matrix_row_is_named_by_its_row(tmp_path):
    A, v = _matrix_points(n=6)
    rows = A.tolist()
    rows[2] = [[1.0, 2.0, 3.0], [4.0, 5.0]]  # a row of another length
    rows[3] = None
    rows[4] = [[1.0, None, 3.0], [4.0, 5.0, 6.0]]
    pq.write_table(pa.table({"A": pa.array(rows, pa.list_(pa.list_(pa.float64()))), "v": v.tolist()}),
                   tmp_path / "p.parquet")
    result = run("eval", "sum(A @ v)", "--points", str(tmp_path / "p.parquet"), "-q", "--skip-bad")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[:3] == [
        "row 3: A: a row of 2 numbers, but earlier points gave shape (2, 3)",
        "row 4: A: no value (null)", "row 5: A: a list holding a null"]
    want = np.einsum("nij,nj->n", A, v)[[0, 1, 5]]
    np.testing.assert_allclose([float(t) for t in result.stdout.split()], want, rtol=1e-14)


def test_parquet_and_arrow_name_rows_where_text_names_lines(tmp_path):
    """A bad record, the stop and a warning about a point say "row N" for Parquet/Arrow
    (binary files have no lines) and "line N" for the same points as NDJSON."""
    x = pa.array([4.0, 1.0, None, 2.0])
    pq.write_table(pa.table({"x": x}), tmp_path / "p.parquet")
    (tmp_path / "p.ndjson").write_text('{"x": 4}\n{"x": 1}\n{"x": null}\n{"x": 2}\n')
    for name, unit in [("p.parquet", "row"), ("p.ndjson", "line")]:
        result = run("eval", "log(x - 1)", "--points", str(tmp_path / name), "--csv")
        assert result.exit_code == 3
        assert result.stdout == f"value\n{float(np.log(3.0))!r}\n-inf\n"
        lines = result.stderr.splitlines()
        assert lines[0] == f"{unit} 3: x: " + ("no value (null)" if unit == "row" else
                                               "null is not a number or an array of numbers")
        assert lines[1].startswith(f"warning: {unit} 2: ") and "log" in lines[1]
        assert lines[-1].startswith(f"diffcli: stopped at the bad record on {unit} 3 after 2 good points")


def test_a_kept_column_all_null_in_the_first_batch_is_text_in_parquet_and_arrow(tmp_path):
    """The first batch's nulls gave Arrow's null type, which later strings did not fit
    (a traceback): the column is declared as text, and later numbers are its text."""
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1.0, "id": null}\n{"x": 2.0, "id": "a"}\n{"x": 3.0, "id": 5}\n')
    for fmt in ["parquet", "arrow", "arrows"]:
        out = _real(["grad", "x^2", "--points", str(path), "--keep", "id",
                     "--chunk", "1", "--format", fmt])
        assert out.returncode == 0, out.stderr
        back = _read(out.stdout, fmt)
        assert back.schema.field("id").type == pa.string()
        assert back.column("id").to_pylist() == [None, "a", "5"]


def test_a_kept_column_that_changes_type_is_one_line_after_a_whole_file(tmp_path):
    """Numbers first, then text: a Parquet column has one type, so the run stops with
    a clear error (exit 3) and leaves a readable file of the points before."""
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1.0, "id": 1}\n{"x": 2.0, "id": "a"}\n')
    out = _real(["grad", "x^2", "--points", str(path), "--keep", "id", "--chunk", "1", "--format", "parquet"])
    assert out.returncode == 3
    assert out.stderr.decode() == ("diffcli: error: kept column 'id' holds string in later points where the first ones "
                                   "held int64: a Parquet or Arrow column has one type (write CSV or NDJSON, or "
                                   "keep the column's type the same)\n")
    assert _read(out.stdout, "parquet").column("id").to_pylist() == [1]


def test_the_command_never_lets_pyarrow_import_pandas(tmp_path):
    """pyarrow imports pandas (0.3-0.4 s) at its first conversion when pandas is
    installed; the command's own process marks it missing. A stand-in pandas first
    on the path records any import of it: none, and the numbers are right."""
    fake = tmp_path / "site" / "pandas"
    fake.mkdir(parents=True)
    marker = tmp_path / "pandas-imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n__version__ = '9.9'\n")
    x = np.linspace(0.5, 2.0, 1000)
    pq.write_table(pa.table({"x": x}), tmp_path / "p.parquet")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "site"), env.get("PYTHONPATH")]))
    for fmt in ("parquet", "csv"):
        out = tmp_path / f"out.{fmt}"
        proc = subprocess.run(_diffcli_command() + ["grad", "sin(x)*x", "--points", str(tmp_path / "p.parquet"),
                                                    "--output", str(out)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists()
        got = pq.read_table(out) if fmt == "parquet" else pa.csv.read_csv(out)
        np.testing.assert_allclose(got.column("d/dx").to_numpy(), np.cos(x) * x + np.sin(x), rtol=1e-14)
