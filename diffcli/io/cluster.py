"""Derivatives over partitioned data on Dask: a dask.dataframe or dask.array
in, a lazy Dask collection out; or, for the CLI, a set of point files in and
one output file per file, each written by a task on a worker.

    import dask.dataframe as dd
    from diffcli import cluster
    points = dd.read_parquet("points/")
    out = cluster.dataframe(points, "sin(x) * y", "gradient", keep=["id"])
    out.to_parquet("results/")

Every partition runs the single-process code: pipeline.run_points over the
same readers (points.py, columnar.py) and the same writers (render.py,
columnar.py), so a partition's numbers, and a file's bytes, are those of
`diffcli ... --points FILE` on the same rows. The expression travels to the
workers as its source text with the request; each worker process compiles it
once and keeps it (_compiled) for every later partition.

Dask is optional (pip install 'diffcli[dask]'): it is imported only here, and
only when one of these functions runs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from ..api import Function
from ..errors import EXIT_OUTPUT_FAILED, DiffcliError, NumericError, UsageError
from .pipeline import run_points
from .points import BadRecord, Chunk, DataError, PointSource, format_from_name, open_points
from .render import Writer, result_columns

INSTALL = "pip install 'diffcli[dask]'"
KINDS = ("value", "gradient", "jacobian", "vjp", "hessian", "derivative", "jvp", "hvp")
OUTPUT_EXTENSIONS = {"parquet": ".parquet", "arrow": ".arrow", "arrows": ".arrows", "csv": ".csv",
                     "tsv": ".tsv", "ndjson": ".ndjson", "json": ".json"}
# A skipped bad record is reported per partition up to this many times (the rest are counted).
MAX_REPORTED_BAD = 100


class ClusterError(DiffcliError):
    """The cluster could not finish the run (workers lost too often, the
    scheduler gone): the outputs were not all written (exit status 4)."""

    exit_status = EXIT_OUTPUT_FAILED


def require_dask(what: str = "--engine dask") -> None:
    """UsageError naming the install command when Dask or distributed is missing
    (found without importing them: importing dask.dataframe costs seconds)."""
    import importlib.util

    for module in ("dask", "distributed"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageError(f"{what} needs Dask, which is not installed ({module} is missing): {INSTALL}")


# ---------------------------------------------------------------- the request, and its cache on each worker


@dataclasses.dataclass(frozen=True)
class Request:
    """What every partition computes: the expression's source text, the kind of
    derivative and its arguments (Function.compute's wrt, seed, tangents,
    order), --at values shared by every point, and how to read and treat the
    points. Small and picklable: this, not a compiled Function, is what is sent."""

    source: str
    kind: str = "gradient"
    at: Mapping = dataclasses.field(default_factory=dict)
    options: Mapping = dataclasses.field(default_factory=dict)  # wrt, seed, tangents, order
    kink: str = "subgradient"
    max_memory: int | str | None = None
    chunk: int = 65536
    keep: tuple = ()
    keep_all: bool = False
    skip_bad: bool = False
    stop_on_kink: bool = False
    stop_on_nonfinite: bool = False
    input_format: str | None = None

    def key(self) -> tuple:
        """The cache key: the source text and everything the compiled plans depend on."""
        return (self.source, self.kind, self.kink, self.max_memory, _frozen(self.options))


def make_request(source: str, kind: str = "gradient", *, at: Mapping | None = None, wrt=None, seed=None,
                 tangents: Mapping | None = None, order: int = 1, **settings) -> Request:
    if kind not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    options = {"wrt": list(wrt) if wrt is not None else None, "order": order}
    if seed is not None:
        options["seed"] = np.asarray(seed, dtype=np.float64)
    if tangents is not None:
        options["tangents"] = {k: np.asarray(v, dtype=np.float64) for k, v in tangents.items()}
    return Request(source, kind, {k: np.asarray(v, dtype=np.float64) for k, v in (at or {}).items()},
                   options, **settings)


def _frozen(value):
    """A hashable stand-in for a request option (lists, dicts, arrays by their bytes)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


# Per worker process: the compiled Function of each request seen, so a
# partition never parses the expression or builds its plans again (the
# Function keeps its plans per variable shapes).
_compiled: dict[tuple, Function] = {}
_compiled_lock = threading.Lock()
_compilations = 0


def compiled(request: Request) -> Function:
    """The request's Function, compiled at the first call in this process."""
    global _compilations
    key = request.key()
    with _compiled_lock:  # a worker with several threads compiles once, too
        function = _compiled.get(key)
        if function is None:
            function = Function(request.source, kink=request.kink, max_memory=request.max_memory)
            _compiled[key] = function
            _compilations += 1
    return function


def compilations() -> int:
    """How many times this process has compiled an expression for a partition
    (client.run(diffcli.cluster.compilations) asks every worker)."""
    return _compilations


def _run(request: Request, function: Function, chunks, writer, on_bad: Callable[[BadRecord], None]):
    return run_points(function, request.kind, chunks, writer, request=dict(request.options),
                      skip_bad=request.skip_bad, stop_on_kink=request.stop_on_kink,
                      stop_on_nonfinite=request.stop_on_nonfinite, on_bad=on_bad)


class _Columns(Writer):
    """The output columns of each chunk, kept in memory: the labels and float64
    matrix that every writer gets from render.result_columns."""

    def __init__(self):
        super().__init__(None)
        self.labels: list[str] | None = None
        self.blocks: list[np.ndarray] = []

    def write(self, result, kept):
        labels, matrix = result_columns(result)
        self.labels = self.labels or labels
        self.blocks.append(matrix)

    def close(self):
        pass

    def matrix(self, columns: int) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.empty((0, columns))


# ---------------------------------------------------------------- dask.dataframe


def dataframe(points, expression: str, kind: str = "gradient", *, at: Mapping | None = None, wrt=None,
              seed=None, tangents: Mapping | None = None, order: int = 1, keep: Sequence[str] = (),
              keep_all: bool = False, shapes: Mapping[str, tuple] | None = None, skip_bad: bool = False,
              kink: str = "subgradient", max_memory: int | str | None = None, chunk: int = 65536):
    """Apply a request to every partition of a dask.dataframe.DataFrame; a lazy
    dask DataFrame with the columns of diffcli's CSV output: the kept columns
    (keep, or keep_all: every column that is not a variable), then value, d/dx,
    ... (each as `diffcli KIND --points` names them), float64, with the input's
    index. Nothing is computed until you compute, persist or write it.

    kind: 'value', 'gradient', 'jacobian', 'vjp' (seed), 'hessian', 'derivative'
    (order, one wrt), 'jvp' or 'hvp' (tangents). Variables come from columns
    named like them, x[0]-style columns, or list columns (give their shapes,
    e.g. shapes={'x': (3,)}, so the output columns are known before anything is
    computed); at gives values shared by every row (a row's own value wins).
    A null or malformed value raises diffcli's DataError naming the partition
    and row (counted from 1) when computed, unless skip_bad drops that row."""
    require_dask("diffcli.cluster.dataframe")
    request = make_request(expression, kind, at=at, wrt=wrt, seed=seed, tangents=tangents, order=order,
                           kink=kink, max_memory=max_memory, chunk=chunk, keep=tuple(keep), keep_all=keep_all,
                           skip_bad=skip_bad)
    function = compiled(request)
    meta = points._meta
    columns = _variable_columns(function.variables, list(meta.columns), request.at)
    kept = [c for c in meta.columns if c not in columns] if keep_all else list(keep)
    missing = [c for c in kept if c not in meta.columns]
    if missing:
        raise DataError(f"keep: no column named {', '.join(map(repr, missing))}")
    request = dataclasses.replace(request, keep=tuple(kept), keep_all=False)
    example = _example_row(points, columns, shapes or {})
    output_meta = _frame_partition(example, request, columns).iloc[:0]
    labels = [c for c in output_meta.columns if c not in kept]
    return points.map_partitions(_frame_partition, request, columns, labels, meta=output_meta,
                                 enforce_metadata=False, align_dataframes=False)


def _variable_columns(variables: tuple, columns: list[str], at: Mapping) -> list[str]:
    """The input columns holding the variables (x, or x[0], x[1], ...)."""
    used = [c for c in columns if isinstance(c, str) and c.split("[", 1)[0] in variables
            and (c in variables or c.endswith("]"))]
    given = {c.split("[", 1)[0] for c in used}
    absent = [v for v in variables if v not in given and v not in at]
    if absent:
        raise DataError(f"the points have no column for {', '.join(map(repr, absent))} and at does not give "
                        f"{'it' if len(absent) == 1 else 'them'} (columns: {', '.join(map(str, columns))})")
    return used


def _example_row(points, columns: list[str], shapes: Mapping[str, tuple]):
    """One made-up row of the input's dtypes (dask's own, with ones for the
    variables): run through the partition function, it gives the output's
    columns and dtypes."""
    frame = points._meta_nonempty.iloc[:1].copy()
    for name in columns:
        if frame[name].dtype == object:
            if name not in shapes:
                raise UsageError(f"column '{name}' holds lists: give its shape (shapes={{'{name}': (3,)}}) "
                                 f"so that the output's columns are known before anything is computed")
            frame[name] = [np.ones(shapes[name]).tolist()]
        else:
            frame[name] = frame[name].dtype.type(1)
    return frame


def _frame_partition(frame, request: Request, columns: list[str], labels: list[str] | None = None,
                     partition_info=None):
    """One pandas partition through the single-process pipeline: its variable
    columns as an Arrow IPC stream read by columnar.BinaryReader (nulls and
    ragged lists are bad rows, as in a file), evaluated chunk by chunk."""
    import pyarrow as pa

    function = compiled(request)
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    source = PointSource(io.BufferedReader(io.BytesIO(sink.getvalue().to_pybytes())), "arrow",
                         function.variables, request.at, chunk_size=request.chunk)
    collector = _Columns()
    skipped: list[int] = []
    outcome = _run(request, function, source.chunks(), collector, lambda bad: skipped.append(bad.line - 1))
    where = f"partition {partition_info['number']}, " if partition_info else ""
    if outcome.stopped_at is not None:
        raise DataError(f"{where}row {outcome.stopped_at.line}: {outcome.stopped_at.message}")
    if outcome.failure is not None:
        raise NumericError(f"{where}{outcome.failure.format(request.source)}")
    return _frame(collector, frame.drop(frame.index[skipped]) if skipped else frame, request.keep, labels)


def _frame(collector: _Columns, rows, keep: tuple, labels: list[str] | None):
    """The kept columns as they were, then the results (labels: the meta's, for
    a partition that gives no result at all)."""
    import pandas as pd

    labels = collector.labels or labels or []
    matrix = collector.matrix(len(labels))
    values = pd.DataFrame(matrix, columns=labels, index=rows.index)
    return pd.concat([rows[list(keep)], values], axis=1) if keep else values


# ---------------------------------------------------------------- dask.array


def array(arrays: Mapping, expression: str, kind: str = "gradient", *, at: Mapping | None = None, wrt=None,
          seed=None, tangents: Mapping | None = None, order: int = 1, kink: str = "subgradient",
          max_memory: int | str | None = None, chunk: int = 65536) -> tuple[list[str], object]:
    """Apply a request to dask arrays, one per variable, whose first axis is the
    batch of points (chunked) and whose other axes are the variable's own
    (made whole). Returns (labels, matrix): the CSV output's column labels and a
    lazy float64 dask array of shape (points, len(labels)), chunked like the
    first input along the batch axis."""
    require_dask("diffcli.cluster.array")
    import dask
    import dask.array as da

    request = make_request(expression, kind, at=at, wrt=wrt, seed=seed, tangents=tangents, order=order,
                           kink=kink, max_memory=max_memory, chunk=chunk)
    function = compiled(request)
    names = [n for n in function.variables if n in arrays]
    absent = [n for n in function.variables if n not in arrays and n not in request.at]
    if absent:
        raise UsageError(f"no array and no at value for {', '.join(map(repr, absent))}")
    if not names:
        raise UsageError("give at least one variable as a dask array (its first axis is the batch)")
    given = [da.asarray(arrays[n]) for n in names]
    if len({a.shape[0] for a in given}) != 1:
        raise UsageError("the arrays must have the same number of points (first axis)")
    batch_chunks = given[0].chunks[0]
    given = [a.rechunk((batch_chunks,) + tuple(-1 for _ in a.shape[1:])) for a in given]
    example = {n: np.ones((1,) + a.shape[1:]) for n, a in zip(names, given)}
    labels = _Columns()
    _run(request, function, _array_chunks(request, function, example, 1), labels, lambda bad: None)
    blocks = []
    for i, n in enumerate(batch_chunks):
        block = dask.delayed(_array_block, pure=True)(request, names, *[a.blocks[i] for a in given])
        blocks.append(da.from_delayed(block, shape=(n, len(labels.labels)), dtype=np.float64))
    return labels.labels, da.concatenate(blocks, axis=0) if blocks else da.empty((0, len(labels.labels)))


def _array_block(request: Request, names: list[str], *blocks) -> np.ndarray:
    function = compiled(request)
    values = {n: np.asarray(b, dtype=np.float64) for n, b in zip(names, blocks)}
    n = len(blocks[0])
    collector = _Columns()
    outcome = _run(request, function, _array_chunks(request, function, values, n), collector, lambda bad: None)
    if outcome.failure is not None:
        raise NumericError(outcome.failure.format(request.source))
    return collector.matrix(len(collector.labels or ()))


def _array_chunks(request: Request, function: Function, values: dict, n: int) -> Iterator[Chunk]:
    """The block as chunks of request.chunk points, --at values broadcast along the batch."""
    for start in range(0, n, request.chunk):
        stop = min(n, start + request.chunk)
        chunk = {k: v[start:stop] for k, v in values.items()}
        for name in function.variables:
            if name not in chunk:
                default = request.at[name]
                chunk[name] = np.broadcast_to(default, (stop - start,) + default.shape)
        yield Chunk(chunk, range(start + 1, stop + 1))


# ---------------------------------------------------------------- files: the CLI's --engine dask


def expand_points(paths: Sequence[str]) -> list[str]:
    """The files named by --points: directories (their files, recursively,
    skipping names that start with '.' or '_', as Dask and Spark do), globs,
    plain names and any fsspec URL (s3://, gs://, file://, ...). Each match,
    sorted, once."""
    import fsspec
    from fsspec.core import url_to_fs

    found: list[str] = []
    for path in paths:
        try:
            fs, root = url_to_fs(path)
        except (ImportError, ValueError) as e:  # an unknown protocol, a filesystem not installed
            raise UsageError(f"--points {path}: {e}") from None
        local = isinstance(fs, fsspec.implementations.local.LocalFileSystem) and "://" not in path
        if fs.isdir(root):
            matches = [p for p in fs.find(root) if not _hidden(p[len(root):])]
        elif any(c in root for c in "*?["):
            matches = [p for p in fs.glob(root) if not fs.isdir(p)]
        elif fs.exists(root):
            matches = [root]
        else:
            raise DataError(f"--points {path}: no such file or directory")
        if not matches:
            raise DataError(f"--points {path}: no files there")
        found += [p if local else fs.unstrip_protocol(p) for p in sorted(matches)]
    return list(dict.fromkeys(found))


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def output_names(paths: Sequence[str], directory: str, fmt: str) -> list[str]:
    """One output file per input, in input order: DIR/part-00000.parquet, ..."""
    width = max(5, len(str(len(paths) - 1)))
    return [os.path.join(directory, f"part-{i:0{width}d}{OUTPUT_EXTENSIONS[fmt]}") for i in range(len(paths))]


@dataclasses.dataclass
class PartitionReport:
    """What one partition's task sends back (small: no data)."""

    path: str
    output: str | None = None  # the file written, None when the partition failed
    points: int = 0
    skipped: int = 0
    bad: list = dataclasses.field(default_factory=list)  # (line, message), at most MAX_REPORTED_BAD
    stopped_at: tuple | None = None  # (line, message) of the bad record that stopped it
    warnings: list = dataclasses.field(default_factory=list)  # the first chunk's, formatted
    kinks: list = dataclasses.field(default_factory=list)  # (span, formatted), first per operation
    failure: str | None = None  # --kink error / --strict
    error: DiffcliError | None = None  # the partition could not be read at all

    @property
    def exit_status(self) -> int:
        if self.error is not None:
            return self.error.exit_status
        if self.stopped_at is not None or self.skipped:
            return DataError.exit_status
        return NumericError.exit_status if self.failure is not None else 0


def write_partition(request: Request, path: str, output: str, fmt: str, run_id: str) -> PartitionReport:
    """A worker's task: the points of one file through the single-process
    pipeline into a temporary file next to output, renamed to output once the
    partition is complete and good. A partition stopped by a bad record (or a
    failed check) leaves no file; a killed worker leaves only a hidden
    temporary file (removed by the client at the end), never a partial output."""
    function = compiled(request)
    report = PartitionReport(path)
    temporary = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.{run_id}.{uuid.uuid4().hex}.tmp")
    try:
        stream = _open(path)
        try:
            source = PointSource(stream, request.input_format or format_from_name(path), function.variables,
                                 request.at, chunk_size=request.chunk, keep=request.keep,
                                 keep_all=request.keep_all)
            with open(temporary, "wb") as raw:
                outcome = _write(request, function, source, raw, fmt, report)
        finally:
            stream.close()
        _note(report, outcome, request.source)
        if report.stopped_at is None and report.failure is None:
            os.replace(temporary, output)
            report.output = output
    except DiffcliError as e:
        report.error = e
    except OSError as e:
        report.error = ClusterError(f"cannot write {output}: {e.strerror or e}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    return report


def _open(path: str):
    """A local file as the single-process path opens it; a URL through fsspec
    (decompressed by its extension), buffered so the readers can peek."""
    if "://" not in path or path.startswith("file://"):
        return open_points(path[len("file://"):] if path.startswith("file://") else path)
    import fsspec

    try:
        raw = fsspec.open(path, "rb", compression="infer").open()
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read points from {path}: {e}") from None
    return raw if hasattr(raw, "peek") else io.BufferedReader(raw)


def _write(request: Request, function: Function, source: PointSource, raw, fmt: str, report: PartitionReport):
    def on_bad(bad: BadRecord):
        if len(report.bad) < MAX_REPORTED_BAD:
            report.bad.append((bad.line, bad.message))

    if fmt in ("parquet", "arrow", "arrows"):
        from .columnar import ArrowWriter

        return _run(request, function, source.chunks(), ArrowWriter(raw, fmt, contextlib.nullcontext), on_bad)
    from .render import DelimitedWriter, JsonArrayWriter, NdjsonWriter

    text = io.TextIOWrapper(raw, encoding="utf-8")  # as the CLI's --output FILE writes text
    writer = {"csv": lambda: DelimitedWriter(text, ","), "tsv": lambda: DelimitedWriter(text, "\t"),
              "ndjson": lambda: NdjsonWriter(text), "json": lambda: JsonArrayWriter(text)}[fmt]()
    try:
        return _run(request, function, source.chunks(), writer, on_bad)
    finally:
        text.flush()
        text.detach()  # the caller closes raw


def _note(report: PartitionReport, outcome, source: str) -> None:
    report.points = outcome.points
    report.skipped = outcome.skipped
    if outcome.stopped_at is not None:
        report.stopped_at = (outcome.stopped_at.line, outcome.stopped_at.message)
    report.warnings = [d.format(source) for d in outcome.diagnostics]
    report.kinks = [(span, d.format(source)) for span, d in outcome.kinks.items()]
    if outcome.failure is not None:
        report.failure = outcome.failure.format(source)


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, memory_limit: int | str | None = None):
    """A dask.distributed Client: of the scheduler at ADDRESS (giving up after
    Dask's connect timeout, distributed.comm.timeouts.connect), or of a
    LocalCluster of worker processes on this machine (loopback only, one thread
    each), shut down when the block ends."""
    require_dask()
    import logging

    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        try:
            client = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise UsageError(f"--scheduler {scheduler}: cannot connect (waited up to {timeout}; "
                             f"distributed.comm.timeouts.connect sets it): {_reason(e)}") from None
        with contextlib.closing(client):
            yield client
        return
    workers = workers or os.cpu_count() or 1
    # The cores shared out: diffcli's evaluator (and polars' CSV writer) would
    # otherwise start a thread per core in every worker (Dask already sets
    # OMP_NUM_THREADS=1, which pyarrow's pool follows).
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, memory_limit=memory_limit or _worker_memory(workers),
                           silence_logs=logging.ERROR,
                           env={"DIFFCLI_THREADS": threads, "POLARS_MAX_THREADS": threads})
    try:
        with Client(cluster, set_as_default=False) as client:
            yield client
    finally:
        cluster.close()


def _worker_memory(workers: int) -> int:
    """Each worker's memory limit: its share of physical memory, at most 4 GiB
    (a partition streams in chunks; the limit only has to stop a runaway)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(min(4 << 30, total // (2 * workers)))


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def new_run_id() -> str:
    """The mark of one run's temporary files."""
    return uuid.uuid4().hex[:12]


def run_files(client, request: Request, paths: Sequence[str], outputs: Sequence[str], fmt: str, *,
              on_done: Callable[[PartitionReport], None] = lambda report: None,
              run_id: str | None = None) -> list[PartitionReport]:
    """Each file a task on the cluster, writing its output; the reports in
    input order. A worker that dies takes its task with it and the scheduler
    runs it again elsewhere (up to distributed.scheduler.allowed-failures
    times); only when that is exhausted, or the scheduler goes away, does the
    run fail (ClusterError). Leftover temporary files of this run are removed
    (call remove_temporaries again once a LocalCluster is closed: a task its
    closing killed leaves one)."""
    from distributed import as_completed

    run_id = run_id or new_run_id()
    futures = client.map(write_partition, [request] * len(paths), paths, outputs, [fmt] * len(paths),
                         [run_id] * len(paths), pure=False)
    index = {future.key: i for i, future in enumerate(futures)}
    reports: list[PartitionReport | None] = [None] * len(paths)
    try:
        for future in as_completed(futures, loop=client.loop):
            try:
                report = future.result()
            except Exception as e:  # noqa: BLE001 - KilledWorker, a lost scheduler, a bug on a worker
                raise ClusterError(f"the cluster could not process {paths[index[future.key]]}: "
                                   f"{type(e).__name__}: {_reason(e)}") from None
            reports[index[future.key]] = report
            on_done(report)
    finally:
        client.cancel(futures)
        remove_temporaries(outputs, run_id)
    return reports


def remove_temporaries(outputs: Sequence[str], run_id: str) -> None:
    """Temporary files of the run that a killed or cancelled task left behind
    (a task still running then finds its file gone and writes nothing)."""
    for directory in {os.path.dirname(o) for o in outputs}:
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                if name.startswith(".") and f".{run_id}." in name and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(directory, name))
