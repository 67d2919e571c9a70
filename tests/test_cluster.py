"""diffcli on Dask (diffcli/io/cluster.py, --engine dask): a real
distributed.LocalCluster of worker processes on loopback, started and stopped
here; the same numbers and bytes as the single-process pipeline; a killed
worker; a bad partition; output files written atomically; Dask absent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster

import diffcli
from diffcli.io import cluster
from diffcli.cli import cli
from diffcli.io.points import DataError
from tests.test_cli import REPO, _diffcli_command, _env

EXPRESSION = "sin(x) * y + x^2"


@pytest.fixture(scope="module")
def client():
    """Two worker processes (one thread each) on 127.0.0.1, shared by this module."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit="1GiB") as local, \
            Client(local, set_as_default=False) as connected:
        yield connected


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], "x": rng.normal(size=n), "y": rng.normal(size=n)})


def _write_csvs(directory, sizes, bad: dict | None = None) -> list:
    """CSV files of points; bad maps a file's number to a data row made bad ('oops' for x)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, n in enumerate(sizes):
        frame = _frame(n, seed=k)
        lines = ["id,x,y"] + [f"{i},{x!r},{y!r}" for i, x, y in frame.itertuples(index=False)]
        if bad and k in bad:
            lines[bad[k]] = f"p{bad[k]},oops,1.0"
        path = directory / f"points-{k}.csv"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _diffcli(*args, env=None, timeout=120):
    return subprocess.run(_diffcli_command() + list(args), capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


# ---------------------------------------------------------------- the Python API


def test_dataframe_is_lazy_with_the_single_process_columns_and_numbers(client):
    frame = _frame(3000)
    points = dd.from_pandas(frame, npartitions=4)
    out = cluster.dataframe(points, EXPRESSION, "gradient", keep=["id"])
    assert list(out.columns) == ["id", "value", "d/dx", "d/dy"]  # known before computing
    assert list(out.dtypes.astype(str))[1:] == ["float64"] * 3
    got = client.compute(out).result()
    want = diffcli.compile(EXPRESSION).grad({"x": frame.x.to_numpy(), "y": frame.y.to_numpy()}, batch_ndim=1)
    assert got.index.equals(frame.index)  # the input's index: it joins back
    assert (got["id"] == frame["id"]).all()
    np.testing.assert_array_equal(got["value"].to_numpy(), want.value)  # bit for bit
    np.testing.assert_array_equal(got["d/dx"].to_numpy(), want["x"])
    np.testing.assert_array_equal(got["d/dx"].to_numpy(), np.cos(frame.x) * frame.y + 2 * frame.x)
    np.testing.assert_array_equal(got["d/dy"].to_numpy(), np.sin(frame.x))
    none = client.compute(cluster.dataframe(points[points.x > 1e9], EXPRESSION, "gradient", keep=["id"])).result()
    assert len(none) == 0 and list(none.columns) == ["id", "value", "d/dx", "d/dy"]  # empty partitions


def test_dataframe_vector_columns_shared_values_and_jacobian(client):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x[0]": rng.normal(size=500), "x[1]": rng.normal(size=500)})
    out = cluster.dataframe(dd.from_pandas(frame, npartitions=3), "x * a", "jacobian", at={"a": 3.0}, wrt=["x"])
    # the header of `diffcli jac 'x * a' --at a=3 --wrt x --points ... --csv`
    assert list(out.columns) == ["value[0]", "value[1]", "dvalue[0]/dx[0]", "dvalue[0]/dx[1]", "dvalue[1]/dx[0]",
                                 "dvalue[1]/dx[1]"]
    got = client.compute(out).result()
    np.testing.assert_array_equal(got["value[1]"].to_numpy(), frame["x[1]"].to_numpy() * 3.0)
    np.testing.assert_array_equal(got["dvalue[0]/dx[0]"].to_numpy(), np.full(500, 3.0))
    np.testing.assert_array_equal(got["dvalue[0]/dx[1]"].to_numpy(), np.zeros(500))


def test_dataframe_bad_row_names_its_partition_and_row_or_is_dropped(client):
    frame = _frame(300)
    frame.loc[250, "x"] = np.nan  # partition 2 of 3 (rows 200..299), its row 51
    frame["x"] = frame["x"].astype("Float64")  # a real null, as Parquet would give
    frame.loc[250, "x"] = pd.NA
    points = dd.from_pandas(frame, npartitions=3)
    with pytest.raises(DataError, match=r"partition 2, row 51: x: no value \(null\)"):
        client.compute(cluster.dataframe(points, EXPRESSION, "value")).result()
    kept = client.compute(cluster.dataframe(points, EXPRESSION, "value", skip_bad=True)).result()
    assert len(kept) == 299 and 250 not in kept.index and 251 in kept.index
    good = frame.drop(index=250)
    np.testing.assert_array_equal(kept["value"].to_numpy(),
                                  diffcli.compile(EXPRESSION).eval({"x": good.x.to_numpy(float),
                                                                    "y": good.y.to_numpy()}, batch_ndim=1).value)


def test_array_entry_point_chunks_the_batch_axis_only(client):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, 3))
    labels, matrix = cluster.array({"x": da.from_array(x, chunks=(300, 1))}, "sum(x^2) * c", "hessian",
                                   at={"c": 0.5}, wrt=["x"])
    assert labels[:3] == ["value", "d2/dx[0]dx[0]", "d2/dx[0]dx[1]"] and len(labels) == 10
    assert matrix.shape == (1000, 10)
    assert matrix.chunks[0] == (300, 300, 300, 100)
    got = client.compute(matrix).result()
    np.testing.assert_array_equal(got[:, 0], 0.5 * np.sum(x ** 2, axis=1))
    np.testing.assert_array_equal(got[:, 1:], np.tile(np.eye(3).ravel(), (1000, 1)))


def test_each_worker_compiles_the_expression_once(client):
    """The request is sent as source text; each worker process compiles it at
    its first partition and reuses it: 12 partitions, at most 2 compilations."""
    source = "exp(x) * y + 12345"  # not used by any other test: the counts are its own
    before = client.run(cluster.compilations)
    points = dd.from_pandas(_frame(1200), npartitions=12)
    client.compute(cluster.dataframe(points, source, "gradient")).result()
    after = client.run(cluster.compilations)
    per_worker = [after[w] - before.get(w, 0) for w in after]
    assert sum(per_worker) >= 1 and max(per_worker) == 1  # 12 partitions, one compile per process


# ---------------------------------------------------------------- the CLI: files in, files out


def _single_process(path, output, *args) -> bytes:
    """The bytes `diffcli grad EXPRESSION --points PATH --output OUTPUT ARGS` writes (run in this process)."""
    result = _invoke("grad", EXPRESSION, "--points", str(path), "--output", str(output), *args)
    assert result.exit_code in (0, 3), result.stderr
    return output.read_bytes()


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_workers_give_the_single_process_bytes(tmp_path):
    """--workers starts its own LocalCluster (here of one process: starting
    processes is what costs); each part is byte for byte the single-process
    output of the same file."""
    paths = _write_csvs(tmp_path / "in", [700, 1500, 10])
    proc = _diffcli("grad", EXPRESSION, "--engine", "dask", "--workers", "1", "--points", str(tmp_path / "in"),
                    "--output", str(tmp_path / "out/"), "--keep", "id", "--chunk", "500")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["part-00000.parquet", "part-00001.parquet",
                                                    "part-00002.parquet"]
    for i, path in enumerate(paths):
        want = _single_process(path, tmp_path / f"single-{i}.parquet", "--keep", "id", "--chunk", "500")
        assert (tmp_path / "out" / f"part-{i:05d}.parquet").read_bytes() == want
    assert pq.read_table(tmp_path / "out" / "part-00001.parquet").num_rows == 1500


def test_cli_scheduler_glob_list_url_and_csv(client, tmp_path):
    paths = _write_csvs(tmp_path / "in", [300, 400, 500])
    url = "file://" + str(paths[2])
    proc = _invoke("grad", EXPRESSION, "--engine", "dask", "--scheduler", client.scheduler.address,
                   "--points", str(tmp_path / "in" / "points-[01].csv"), "--points", url,
                   "--output", str(tmp_path / "out"), "--format", "csv")
    assert proc.exit_code == 0, proc.stderr
    for i, path in enumerate(paths):
        want = _single_process(path, tmp_path / f"single-{i}.csv")
        assert (tmp_path / "out" / f"part-{i:05d}.csv").read_bytes() == want


def test_cli_bad_partition_exit_3_names_file_and_line_others_complete(client, tmp_path):
    """A bad record late in one file: that file gets no output (not a partial
    one), every other file's output is complete, no temporary file is left."""
    paths = _write_csvs(tmp_path / "in", [400, 3000, 400], bad={1: 2500})
    proc = _invoke("grad", EXPRESSION, "--engine", "dask", "--scheduler", client.scheduler.address,
                   "--points", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--chunk", "100")
    assert proc.exit_code == 3
    assert f"{paths[1]}: line 2501: x: 'oops' is not a number" in proc.stderr
    assert f"diffcli: error: {paths[1]}: stopped at the bad record on line 2501; no output file for it" in proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["part-00000.parquet", "part-00002.parquet"]
    for i in (0, 2):
        assert (tmp_path / "out" / f"part-{i:05d}.parquet").read_bytes() == \
            _single_process(paths[i], tmp_path / f"single-{i}.parquet", "--chunk", "100")
    skipping = _invoke("grad", EXPRESSION, "--engine", "dask", "--scheduler", client.scheduler.address,
                       "--points", str(tmp_path / "in"), "--output", str(tmp_path / "skip"), "--skip-bad",
                       "--format", "ndjson")
    assert skipping.exit_code == 3  # as in one process: bad records were met
    assert sorted(os.listdir(tmp_path / "skip")) == [f"part-0000{i}.ndjson" for i in range(3)]
    assert (tmp_path / "skip" / "part-00001.ndjson").read_bytes() == \
        _single_process(paths[1], tmp_path / "single-skip.ndjson", "--skip-bad")


def test_cli_survives_a_killed_worker(client, tmp_path):
    """SIGKILL one worker process while it runs a partition: the scheduler runs
    that partition again on another worker; every file complete and correct."""
    sizes = [100_000] * 5
    _write_csvs(tmp_path / "in", sizes)
    pids = client.run(os.getpid)
    run = subprocess.Popen(_diffcli_command() + ["grad", EXPRESSION, "--engine", "dask", "--scheduler",
                                                 client.scheduler.address, "--points", str(tmp_path / "in"),
                                                 "--output", str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        busy = [w for w, tasks in client.processing().items() if any("write_partition" in str(t) for t in tasks)]
        if busy:
            victim = pids[busy[0]]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    out, err = run.communicate(timeout=180)
    assert victim is not None, "the run ended before a worker could be killed"
    assert run.returncode == 0, err
    assert victim not in client.run(os.getpid).values()  # that process is gone (its nanny started another)
    function = diffcli.compile(EXPRESSION)
    for i, n in enumerate(sizes):
        table = pq.read_table(tmp_path / "out" / f"part-{i:05d}.parquet")
        frame = _frame(n, seed=i)
        want = function.grad({"x": frame.x.to_numpy(), "y": frame.y.to_numpy()}, batch_ndim=1)
        np.testing.assert_array_equal(table["d/dx"].to_numpy(), want["x"])
        np.testing.assert_array_equal(table["value"].to_numpy(), want.value)
    assert sorted(os.listdir(tmp_path / "out")) == [f"part-{i:05d}.parquet" for i in range(5)]  # no temporaries


def test_cli_interrupted_leaves_no_file_that_looks_complete_but_is_not(client, tmp_path):
    """Ctrl-C while partitions are being written: status 130; what is in DIR is
    whole files (each with all its rows), and no temporary file stays."""
    sizes = [100_000] * 5
    _write_csvs(tmp_path / "in", sizes)
    run = subprocess.Popen(_diffcli_command() + ["grad", EXPRESSION, "--engine", "dask", "--scheduler",
                                                 client.scheduler.address, "--points", str(tmp_path / "in"),
                                                 "--output", str(tmp_path / "out"), "--chunk", "10000"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None and not any(
            "write_partition" in str(t) for tasks in client.processing().values() for t in tasks):
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130 and err.endswith("interrupted\n"), err
    # A task already running on a worker of this (remote) cluster cannot be stopped: it ends
    # by renaming its whole file, or by finding its temporary file removed and writing nothing.
    deadline = time.monotonic() + 60
    while any(n.startswith(".") for n in os.listdir(tmp_path / "out")) and time.monotonic() < deadline:
        time.sleep(0.1)
    names = os.listdir(tmp_path / "out")
    assert not [n for n in names if n.startswith(".")], names
    assert len(names) < len(sizes)  # it was stopped before the end
    for name in names:
        assert pq.read_table(tmp_path / "out" / name).num_rows == 100_000


def test_cli_unanswering_scheduler_exit_2_in_bounded_time(tmp_path):
    (tmp_path / "p.csv").write_text("x,y\n1,2\n")
    env = {**_env(), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    started = time.monotonic()
    proc = _diffcli("grad", EXPRESSION, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",
                    "--points", str(tmp_path / "p.csv"), "--output", str(tmp_path / "out"), env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("diffcli: error: --scheduler tcp://127.0.0.1:9: cannot connect (waited up to 1s")
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 30


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--workers goes with --engine dask"),
    (["--engine", "dask", "--workers", "2"], "give --output DIR/"),
    (["--engine", "dask", "--output", "o", "--workers", "1", "--scheduler", "tcp://a:1"], "not both"),
    (["--engine", "dask", "--output", "o", "--format", "table"], "--engine dask writes files"),
    (["--points", "b.csv"], "--points once without --engine dask"),
])
def test_cli_dask_options_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["grad", "x", "--points", "a.csv", *args], catch_exceptions=False)
    assert result.exit_code == 2 and message in result.stderr


# ---------------------------------------------------------------- without Dask


BLOCK_DASK = """
import sys
class _NoDask:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('dask', 'distributed'):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoDask())
"""


def test_without_dask_everything_else_works_and_dask_options_say_how_to_install(tmp_path):
    (tmp_path / "p.csv").write_text("x,y\n1,2\n")
    (tmp_path / "sitecustomize.py").write_text(BLOCK_DASK)
    env = {**_env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "diffcli"]
    one = subprocess.run(command + ["grad", "sin(x)", "--at", "x=0", "--csv"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert one.returncode == 0 and one.stdout == "value,d/dx\n0.0,1.0\n"
    many = subprocess.run(command + ["grad", "x*y", "--points", str(tmp_path / "p.csv"), "--csv"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert many.returncode == 0 and many.stdout == "value,d/dx,d/dy\n2.0,2.0,1.0\n"
    dask = subprocess.run(command + ["grad", "x*y", "--engine", "dask", "--points", str(tmp_path / "p.csv"),
                                     "--output", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert dask.returncode == 2
    assert dask.stderr == ("diffcli: error: --engine dask needs Dask, which is not installed (dask is missing): "
                           "pip install 'diffcli[dask]'\n")
    api = subprocess.run([sys.executable, "-c", "import diffcli\ntry:\n    diffcli.cluster.dataframe(None, 'x')\n"
                          "except diffcli.UsageError as e:\n    print(e)"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert "diffcli.cluster.dataframe needs Dask" in api.stdout and "pip install 'diffcli[dask]'" in api.stdout


def test_one_point_and_import_diffcli_load_no_dask(tmp_path):
    code = ("import sys, runpy; sys.argv = ['diffcli', 'grad', 'sin(x)', '--at', 'x=1', '--json']\n"
            "import diffcli\ntry:\n    runpy.run_module('diffcli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'diffcli.io.cluster')),"
            " file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**_env(), "PYTHONPATH": REPO}, timeout=60)
    assert '"gradient": {"x": 0.5403023058681398}' in proc.stdout
    assert proc.stderr == "[]\n"
