"""Shared pieces of the readers: checks that a file is text, the slow scan that explains a bad line, and
building `Interactions` with sorted id maps. Private to genrec.data."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import re
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.data.interactions import DataError, IdMap, Interactions

_HEAD_BYTES = 1 << 20
_SEP_NAMES = {"\t": "tab", "::": "'::'", ",": "comma", ";": "semicolon", "|": "'|'", " ": "space"}


# text checks ----------------------------------------------------------------------------------------------
def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def _check_text(path: Path, head: bytes, utf8: bool = True) -> None:
    """Reject empty files and binary data (NUL bytes, or bytes that are not UTF-8 when `utf8`)."""
    if not head.strip():
        raise DataError(f"{path}: file is empty")
    nul = head.find(b"\x00")
    if nul >= 0:
        line = head.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}, line {line}: does not look like text (NUL byte); is it compressed or binary?")
    if utf8:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError as err:
            line = head.count(b"\n", 0, err.start) + 1
            raise DataError(
                f"{path}, line {line}: does not look like UTF-8 text (byte 0x{head[err.start]:02x}); "
                "is it compressed or binary?"
            ) from None


def _head(path: Path) -> bytes:
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise DataError(f"{path}: cannot be decompressed ({err})") from None


def _small_text(path: Path, encoding: str | None = None) -> str:
    """A small side file (movies, users) as text: UTF-8, falling back to latin-1 (older MovieLens releases)."""
    raw = path.read_bytes()
    _check_text(path, raw, utf8=False)
    if encoding is None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "latin-1"
    return raw.decode(encoding)


def _show(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# the slow scan that explains a bad line --------------------------------------------------------------------
def _line_problem(text: str, sep: str, fields: tuple[str, ...], int_fields: tuple[str, ...]) -> str | None:
    """Why one data line does not parse as `fields` separated by `sep` (None when it does)."""
    if "\x00" in text or "\ufffd" in text:
        return f"does not look like text: {_show(text)}"
    parts = text.split(sep)
    sep_name = _SEP_NAMES.get(sep, repr(sep))
    if len(parts) != len(fields):
        others = [name for s, name in _SEP_NAMES.items() if s != sep and s != " " and s in text]
        hint = f"; the line looks {others[0]}-separated" if len(parts) == 1 and others else ""
        kind = "truncated line: " if len(parts) < len(fields) and not hint else ""
        return (
            f"{kind}expected {len(fields)} {sep_name}-separated fields ({' '.join(fields)}), "
            f"found {len(parts)}{hint}: {_show(text)}"
        )
    for name, value in zip(fields, parts):
        value = value.strip()
        if not value:
            return f"empty {name}: {_show(text)}"
        if name in int_fields:
            if not re.fullmatch(r"[+-]?\d+", value):
                return f"{name} {value!r} is not an integer id: {_show(text)}"
            continue
        try:
            number = float(value)
        except ValueError:
            return f"{name} {value!r} is not a number: {_show(text)}"
        if np.isnan(number):
            return f"{name} is NaN: {_show(text)}"
    return None


def _explain(path: Path, sep: str, fields: tuple[str, ...], int_fields: tuple[str, ...], header: int,
             fallback: str) -> DataError:
    """A DataError naming the first line of `path` that does not parse (scans the file; error path only)."""
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        for number, line in enumerate(f, 1):
            text = line.rstrip("\r\n")
            if number > header and text.strip():
                problem = _line_problem(text, sep, fields, int_fields)
                if problem:
                    return DataError(f"{path}, line {number}: {problem}")
    return DataError(f"{path}: {fallback}")


def _read_text_table(path: Path, sep: str, names: list[str] | None, encoding: str | None = None) -> pd.DataFrame:
    """A small side file split on a literal separator into string columns (no quoting: titles hold quotes)."""
    text = _small_text(path, encoding)
    shown = _SEP_NAMES.get(sep, repr(sep))
    if len(sep) > 1:
        text = text.replace(sep, "\x1f")
        sep = "\x1f"
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, header=None, names=names, dtype=str, keep_default_na=False,
                            quoting=csv.QUOTE_NONE)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: cannot be read as {shown}-separated text ({_one_line(err)})") from None
    if not isinstance(table.index, pd.RangeIndex):  # rows longer than `names`
        raise DataError(f"{path}: expected {len(names)} {shown}-separated fields per line, found more")
    return table


def _with_id_index(attrs: pd.DataFrame, ids: pd.Series, path: Path, header: int) -> pd.DataFrame:
    """Index an attribute frame by its integer id column, naming the line of a bad id."""
    numeric = pd.to_numeric(ids, errors="coerce")
    if numeric.isna().any():
        row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
        raise DataError(f"{path}, line {row + 1 + header}: id {ids.iloc[row]!r} is not an integer")
    attrs = attrs.set_axis(pd.Index(numeric.to_numpy(np.int64)), axis=0)
    return attrs[~attrs.index.duplicated()]


def _sorted_map(values: np.ndarray, name: str) -> tuple[IdMap, np.ndarray]:
    """IdMap of the distinct values in sorted order, and each value's index."""
    codes, uniques = pd.factorize(np.asarray(values), sort=True)
    return IdMap(np.asarray(uniques), name), codes.astype(np.int32)


def _build(users, items, values, timestamps, source: str, item_attributes: pd.DataFrame | None = None,
           user_attributes: pd.DataFrame | None = None) -> Interactions:
    """Interactions from raw id columns with sorted id maps; attribute frames (indexed by raw id) realigned."""
    user_ids, user_codes = _sorted_map(users, "user")
    item_ids, item_codes = _sorted_map(items, "item")
    return Interactions(user_codes, item_codes, np.asarray(values), np.asarray(timestamps), user_ids, item_ids,
                        _align(item_attributes, item_ids), _align(user_attributes, user_ids), source=source)


def _align(attributes: pd.DataFrame | None, ids: IdMap) -> pd.DataFrame | None:
    """Row i describes index i; rows for ids the attribute table lacks are missing (False for flags)."""
    if attributes is None:
        return None
    index = attributes.index.astype(str) if ids.raw.dtype == object else attributes.index
    frame = attributes.set_axis(index, axis=0).reindex(pd.Index(ids.raw)).reset_index(drop=True)
    for col in attributes.select_dtypes(bool).columns:
        frame[col] = frame[col].fillna(False).astype(bool)
    return frame


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
