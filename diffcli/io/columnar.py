"""Points in Parquet and Arrow IPC (file and stream), in and out, through
pyarrow: record batches straight to and from float64 NumPy arrays, never a
Python loop over points (except for --keep columns, which pass as values).

Imported only for these formats: pyarrow costs start-up time that one point
(--at) must not pay."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .points import BadRecord, Chunk, DataError, PointSource, decompressed, plan_columns
from .render import Writer, leaves

BINARY_FORMATS = ("parquet", "arrow")
OUTPUT_FORMATS = {"parquet": "Parquet", "arrow": "Arrow IPC file", "arrows": "Arrow IPC stream"}


# ---------------------------------------------------------------- reading


class BinaryReader:
    """Chunks of at most chunk_size points from the record batches of a Parquet
    file (by row groups, only the columns used) or an Arrow IPC file or stream.
    A null, a list of the wrong length, or a batch that cannot be read is a bad
    record, named by its row (from 1): binary files have no lines."""

    def __init__(self, source: PointSource, stream, fmt: str):
        self.source = source
        try:
            schema, self.batches = (_parquet if fmt == "parquet" else _ipc)(stream, source)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DataError(f"cannot read the points as {'Parquet' if fmt == 'parquet' else 'Arrow IPC'}: "
                            f"{_reason(e)}") from None
        self.names = schema.names
        self.plain, self.indexed, keep_index = plan_columns(source, self.names)
        self.keep_index = keep_index
        for i in list(self.plain.values()) + [i for _, cols in self.indexed.values() for i in cols]:
            _check_numeric(schema.field(i), plain=i in self.plain.values())

    def chunks(self) -> Iterator[Chunk]:
        row = 0  # rows before this batch
        batches = iter(self.batches)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as e:
                yield Chunk(self._defaults(0), [], {}, BadRecord(row + 1, f"cannot read the points: "
                                                                 f"{_reason(e)}; diffcli stops reading here", "row"),
                            "row")
                return
            for start in range(0, batch.num_rows, self.source.chunk_size):
                piece = batch.slice(start, self.source.chunk_size)
                yield from self._pieces(piece, row + start)
            row += batch.num_rows

    def _pieces(self, batch, row: int) -> Iterator[Chunk]:
        """The batch as chunks, each ending at a bad record (if any)."""
        values, bad = self._values(batch)
        kept = self._kept(batch)
        start = 0
        for index, message in bad:
            yield self._chunk(values, kept, start, index, row, BadRecord(row + index + 1, message, "row"))
            start = index + 1
        if start < batch.num_rows:
            yield self._chunk(values, kept, start, batch.num_rows, row, None)

    def _chunk(self, values, kept, start, stop, row, bad) -> Chunk:
        n = stop - start
        chunk_values = {k: v[start:stop] for k, v in values.items()}
        chunk_values.update(self._defaults(n))
        return Chunk(chunk_values, range(row + start + 1, row + stop + 1),
                     {k: v[start:stop] for k, v in kept.items()}, bad, "row")

    def _defaults(self, n: int) -> dict[str, np.ndarray]:
        values = {}
        for name in self.source.variables:
            if name not in self.plain and name not in self.indexed:
                default = np.asarray(self.source.defaults[name], dtype=np.float64)
                values[name] = np.broadcast_to(default, (n,) + default.shape)
        return values

    def _values(self, batch) -> tuple[dict[str, np.ndarray], list[tuple[int, str]]]:
        """float64 arrays per variable, and the bad rows (index, why), in order."""
        n = batch.num_rows
        values, bad = {}, {}
        for name, i in self.plain.items():
            column = batch.column(i)
            if _is_list(column.type):
                values[name] = self._vectors(name, column, bad)
            else:
                self.source.shapes.setdefault(name, ())
                values[name] = _floats(column)
                _note_nulls(column, self.names[i], bad)
        for name, (shape, columns) in self.indexed.items():
            for i in columns:
                _note_nulls(batch.column(i), self.names[i], bad)
            values[name] = np.stack([_floats(batch.column(i)) for i in columns], axis=1).reshape((n,) + shape)
        return values, sorted(bad.items())

    def _vectors(self, name: str, column, bad: dict) -> np.ndarray:
        """A list column as an (n, k) array, lists of lists as an (n, k, m) array
        (and so on), every row of one shape: the earlier points', else the first
        whole row's. A row with a null, or lists of other lengths, is a bad row."""
        n = len(column)
        known = self.source.shapes.get(name)
        owner = np.arange(n)  # the row of each list (then of each number) at this depth
        wrong: dict[int, str] = {}
        shape: list[int] = []
        for depth in range(_list_depth(column.type)):
            lengths = pc.list_value_length(column)
            nulls = lengths.is_null().to_numpy(zero_copy_only=False)
            sizes = lengths.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            for index in np.unique(owner[nulls]).tolist():
                wrong.setdefault(index, f"{name}: no value (null)" if depth == 0 else f"{name}: a list holding a null")
            whole = ~nulls & ~np.isin(owner, list(wrong))
            k = known[depth] if known else int(sizes[whole][0]) if whole.any() else 0
            shape.append(k)
            off = whole & (sizes != k)
            for index in np.unique(owner[off]).tolist():
                wrong.setdefault(index, (depth, int(sizes[np.argmax(off & (owner == index))])))
            owner = np.repeat(owner, sizes)
            column = pc.list_flatten(column)
        flat = _floats(column)
        for index in np.unique(owner[column.is_null().to_numpy(zero_copy_only=False)]).tolist():
            wrong.setdefault(index, f"{name}: a list holding a null")
        shape = tuple(shape)
        for index, why in wrong.items():
            bad.setdefault(index, why if isinstance(why, str) else _wrong_shape(name, why, shape))
        good = np.setdiff1d(np.arange(n), list(wrong))
        if good.size:
            self.source.shapes.setdefault(name, shape)
        out = np.full((n, *shape), np.nan)
        size = math.prod(shape)
        if good.size and size:
            starts = np.searchsorted(owner, good)  # a whole row's numbers are contiguous, in row order
            out[good] = flat[starts[:, None] + np.arange(size)].reshape((good.size, *shape))
        return out

    def _kept(self, batch) -> dict[str, pa.Array]:
        """Kept columns as Arrow arrays: a binary output writes them unchanged."""
        return {name: batch.column(i) for name, i in zip(self.source.keep, self.keep_index)}


def _list_depth(kind) -> int:
    depth = 0
    while _is_list(kind):
        kind, depth = kind.value_type, depth + 1
    return depth


def _is_list(kind) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _wrong_shape(name: str, why: tuple[int, int], shape: tuple) -> str:
    depth, size = why
    if len(shape) == 1:
        return f"{name}: a list of {size} numbers, but earlier points gave {shape[0]}"
    what = "a list of" if depth == 0 else "a row of"
    return f"{name}: {what} {size} {'rows' if depth < len(shape) - 1 else 'numbers'}, but earlier points gave " \
           f"shape {shape}"


def text_values(column) -> list:
    """A kept Arrow column's values for a text output: numbers, strings and
    booleans as they are, anything else (timestamps, dates, decimals) as Arrow's text."""
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind) or pa.types.is_boolean(kind)):
        column = pc.cast(column, pa.string())
    return column.to_pylist()


def _parquet(stream, source: PointSource):
    import pyarrow.parquet as pq

    if not _seekable(stream):
        raise DataError("a Parquet file keeps its index at its end: give its name, not stdin or a "
                        "compressed file (Parquet compresses itself), or send an Arrow IPC stream (--in arrow)")
    parquet = pq.ParquetFile(stream)
    return parquet.schema_arrow, parquet.iter_batches(batch_size=max(1, min(source.chunk_size, 1 << 20)))


def _ipc(stream, source: PointSource):
    if stream.peek(6)[:6] == b"ARROW1":
        if not _seekable(stream):
            raise DataError("an Arrow IPC file keeps its index at its end: give its name, not stdin or a "
                            "compressed file, or send the IPC stream format (.arrows)")
        reader = pa.ipc.open_file(stream)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    reader = pa.ipc.open_stream(stream)
    return reader.schema, reader


def _seekable(stream) -> bool:
    try:
        return stream.seekable() and not decompressed(stream)  # which seeks by decompressing again
    except (OSError, ValueError):
        return False


def _check_numeric(field, plain: bool) -> None:
    kind = field.type
    while plain and _is_list(kind):
        kind = kind.value_type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise DataError(f"column '{field.name}' holds {field.type}, not numbers")


def _floats(column) -> np.ndarray:
    """The column as float64 (nulls as nan: the caller names them as bad rows)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type != pa.float64():
        column = pc.cast(column, pa.float64(), safe=False)
    return column.to_numpy(zero_copy_only=False)


def _note_nulls(column, name: str, bad: dict) -> None:
    if column.null_count:
        for index in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
            bad.setdefault(index, f"{name}: no value (null)")


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


# ---------------------------------------------------------------- writing


class ArrowWriter(Writer):
    """Parquet (a row group per chunk), or an Arrow IPC file or stream (a record
    batch per chunk), to a binary stream: float64 columns named as the CSV
    header names them, after the kept columns."""

    def __init__(self, stream, fmt: str, whole):
        super().__init__(stream, whole)
        self.format = fmt
        self.sink = None
        self.schema = None

    def write(self, result, kept):
        names, arrays = list(kept), [_kept_array(values) for values in kept.values()]
        for leaf in leaves(result, 1):
            array = np.ascontiguousarray(leaf.array, dtype=np.float64)
            if array.ndim == 1:
                names.append(next(leaf.iter_labels()))
                arrays.append(pa.array(array))
            elif math.prod(array.shape[1:]):  # a leaf of no numbers has no column, as in CSV
                names.append(_INDEX.sub("", next(leaf.iter_labels())))
                arrays.append(_nested_lists(array))
        if self.schema is not None:
            try:
                arrays[:len(kept)] = [_conformed(name, array, self.schema.field(name).type)
                                      for name, array in zip(kept, arrays)]
            except DataError:
                self.close()  # a whole file of the points before, as a bad record leaves it
                raise
        batch = pa.RecordBatch.from_arrays(arrays, names=names)
        self.kept_names = set(kept)
        with self.whole():
            if self.sink is None:
                self.schema = _declared(batch.schema)
                self.sink = self._open(self.schema)
            if batch.schema != self.schema:
                batch = batch.cast(self.schema)
            self.sink.write_batch(batch)
            self.stream.flush()

    def _open(self, schema):
        if self.format == "parquet":
            import pyarrow.parquet as pq

            # Dictionary encoding suits the kept columns (labels, names) but not results:
            # on 10^6 x 4 random floats it made the file 25 % bigger and the writing 5x slower.
            kept = [f.name for f in schema if f.type != pa.float64() or f.name in self.kept_names]
            return pq.ParquetWriter(self.stream, schema, use_dictionary=kept)
        if self.format == "arrow":
            return pa.ipc.new_file(self.stream, schema)
        return pa.ipc.new_stream(self.stream, schema)

    def close(self):
        if self.sink is not None:
            with self.whole():
                sink, self.sink = self.sink, None
                sink.close()
        self.stream.flush()


_INDEX = re.compile(r"\[[0-9,]*\]")  # x[0], A[1,2]: the indices in a CSV label


def _nested_lists(array: np.ndarray):
    """An (n, k) array as a fixed-size-list column, (n, k, m) as lists of lists
    (polars reads them as Array columns, DuckDB as DOUBLE[k][m]), without a copy."""
    column = pa.array(array.reshape(-1))
    for size in reversed(array.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _declared(schema):
    """The file's schema from the first batch's: a kept column that is all null there
    (Arrow's null type) is declared as text, the type kept values of the text inputs
    have, so that the strings of later batches fit it."""
    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema])


def _conformed(name: str, array, declared):
    """A later batch's kept column as the declared type: cast where Arrow casts
    safely (nulls to anything, numbers to text), else, to a text column, each value's
    JSON text (as CSV writes it); a value of another type is a clear error, not
    a traceback (Parquet and Arrow hold one type a column)."""
    if array.type == declared:
        return array
    try:
        return array.cast(declared)
    except (pa.ArrowException, TypeError, ValueError):
        if declared == pa.string():
            from .render import kept_cell

            return pa.array([kept_cell(v) for v in array.to_pylist()], pa.string())
    raise DataError(f"kept column '{name}' holds {array.type} in later points where the first ones held "
                    f"{declared}: a Parquet or Arrow column has one type (write CSV or NDJSON, or keep "
                    "the column's type the same)")


def _kept_array(values):
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):  # mixed JSON values: as their JSON text
        from .render import kept_cell

        return pa.array([kept_cell(v) for v in values], pa.string())
