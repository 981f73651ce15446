"""Read a Parquet file as batches of the reader's types (nested values as JSON text)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from .base import DataFileError, _check_names, _empty_batch, _final_schema, _normalise, _warning


def _iter_parquet(stream: BinaryIO, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream)
        source = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(
            f"This Parquet file can't be read ({exc}). Check that it is complete and upload it again."
        ) from None
    warnings: list[dict] = []
    if not len(source):
        raise DataFileError("The Parquet file has no columns.")
    _check_declared_rows(pf)
    names = _check_names(source.names, warnings)
    fields = []
    for name, f in zip(names, source, strict=True):
        target = _normalise(_storage_type(f.type))
        if pa.types.is_null(target):
            target = pa.string()
        if _is_nested(f.type):
            warnings.append(
                _warning(name, "nested", f"`{name}` holds nested values ({f.type}); they are shown as JSON text.")
            )
        fields.append(pa.field(name, target))
    schema = _final_schema(fields, warnings, pf.metadata.num_rows, 0)
    produced = False
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            columns = [_to_reader_type(batch.column(i), schema.field(i)) for i in range(batch.num_columns)]
            produced = True
            yield pa.RecordBatch.from_arrays(columns, schema=schema)
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(f"This Parquet file is damaged ({exc}). Export it again and upload the new file.") from None
    if not produced:
        yield _empty_batch(schema)


def max_rows() -> int:
    """The most rows a Parquet file may declare: as many as the largest CSV upload can hold (a character and a
    line break each). Parquet compresses repeated values to almost nothing, so without this a small file could
    declare billions of rows and keep a worker busy for hours."""
    from django.conf import settings

    return max(1, int(getattr(settings, "PORTAL_MAX_UPLOAD_BYTES", 2 * 1024**3)) // 2)


def _check_declared_rows(pf) -> None:
    metadata = pf.metadata
    declared = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    if metadata.num_rows < 0 or any(n < 0 for n in declared) or sum(declared) != metadata.num_rows:
        raise DataFileError("This Parquet file's row counts contradict each other: it is damaged. Export it again.")
    if metadata.num_rows > max_rows():
        raise DataFileError(
            f"This Parquet file declares {metadata.num_rows:,} rows; the portal reads at most {max_rows():,}. "
            "Split it into smaller files and upload those."
        )


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_union(t)


def _storage_type(t: pa.DataType) -> pa.DataType:
    """An extension type's storage: its values are read as what they are stored as, whatever the type's name."""
    return _storage_type(t.storage_type) if isinstance(t, pa.BaseExtensionType) else t


def _to_reader_type(arr: pa.Array, target: pa.Field) -> pa.Array:
    t = arr.type
    if t == target.type:
        return arr
    if isinstance(t, pa.BaseExtensionType):
        # A registered extension type's to_pylist() gives its own Python objects (bytes for a user's UUID type,
        # shown as "b'\\x00…'"): read the storage instead, except UUIDs, which read best in their usual form.
        if t.extension_name == "arrow.uuid":
            return pa.array([None if v is None else str(uuid.UUID(bytes=v)) for v in arr.storage.to_pylist()],
                            pa.string())
        return _to_reader_type(arr.storage, target)
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        return _to_reader_type(arr, target)
    if _is_nested(t):
        return pa.array(
            [None if v is None else json.dumps(v, default=str, ensure_ascii=False) for v in arr.to_pylist()],
            pa.string(),
        )
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return arr.cast(pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            return pa.array([None if v is None else v.hex() for v in arr.to_pylist()], pa.string())
    try:
        return pc.cast(arr, target.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pa.types.is_integer(t):
            raise DataFileError(
                f"`{target.name}` has whole numbers too large for the portal (over 9,223,372,036,854,775,807). Store "
                "them as text or decimals and upload the file again."
            ) from None
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())
