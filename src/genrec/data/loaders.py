"""Readers for the public recommendation data formats; each returns one validated `Interactions`.

- `load_movielens`: any MovieLens release (100K `u.data`, 1M/10M `ratings.dat`, 20M/25M/32M/latest `ratings.csv`),
  with item attributes (title, year, genres) and user attributes where the release has them.
- `load_lightgcn`: the NGCF/LightGCN `train.txt`/`test.txt` pair (`user item item ...` per line).
- `load_sequences`: time-ordered `user i1 i2 ...` lines (the S3-Rec Beauty/LastFM files).
- `load_table`: any CSV/TSV/Parquet table with a column mapping.

Large files are parsed by pandas' C reader or numpy in one pass. Bad input raises a one-line `DataError` that
names the file and, where possible, the 1-based line: the fast path only checks; a slow scan that explains the
first bad line runs only when the check fails. Id maps are sorted (numerically for numeric ids), so for files with
contiguous ids an index is its id minus the smallest id.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.data._textio import _SEP_NAMES, _build, _check_text, _head, _one_line, _require_file, _sorted_map
from genrec.data.interactions import DataError, IdMap, Interactions
from genrec.data.movielens import load_movielens

__all__ = ["load_lightgcn", "load_movielens", "load_sequences", "load_table"]


# one-line-per-user files --------------------------------------------------------------------------------
def load_lightgcn(folder_or_train: str | Path,
                  test_path: str | Path | None = None) -> tuple[Interactions, Interactions]:
    """The NGCF/LightGCN pair: (train, test), sharing one user and one item IdMap (the union, ids sorted, so
    index i is id i for the Gowalla files). values 1.0, timestamps -1. A folder means its train.txt and
    test.txt; a train file without `test_path` means test.txt beside it."""
    path = Path(folder_or_train)
    train_path = path / "train.txt" if path.is_dir() else path
    test_path = Path(test_path) if test_path is not None else train_path.with_name("test.txt")
    parts = [_user_lines(_require_file(p), numeric=True) for p in (train_path, test_path)]
    user_ids = IdMap(np.unique(np.concatenate([p[0] for p in parts])), "user")
    item_ids = IdMap(np.unique(np.concatenate([p[2] for p in parts])), "item")
    train, test = (
        Interactions(np.searchsorted(user_ids.raw, users), np.searchsorted(item_ids.raw, items), None, None,
                     user_ids, item_ids, source=str(p))
        for p, (_, users, items, _) in zip((train_path, test_path), parts)
    )
    return train, test


def load_sequences(path: str | Path) -> Interactions:
    """Time-ordered `user i1 i2 ...` lines: timestamps are positions in the line (0, 1, ...), values 1.0;
    repeated items stay separate events. Ids may be integers (sorted numerically) or other tokens."""
    path = _require_file(path)
    line_users, users, items, positions = _user_lines(path, numeric=False)
    user_ids, _ = _sorted_map(line_users, "user")
    item_ids, item_codes = _sorted_map(items, "item")
    return Interactions(user_ids.index(users), item_codes, None, positions, user_ids, item_ids, source=str(path))


def _user_lines(path: Path, numeric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse `user item item ...` lines in one pass over the bytes.

    Returns (user of each line, user of each event, item of each event, position of each event in its line).
    """
    raw = path.read_bytes()
    _check_text(path, raw)
    buf = np.frombuffer(raw, np.uint8)
    space = np.isin(buf, np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8))
    starts = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))
    line_of_token = np.cumsum(buf == ord("\n"))[starts] + 1  # 1-based line numbers
    tokens = np.array(raw.split())
    first = np.concatenate(([True], line_of_token[1:] != line_of_token[:-1]))
    all_digits = np.char.isdigit(tokens)
    if numeric and not all_digits.all():
        bad = int(np.flatnonzero(~all_digits)[0])
        raise DataError(f"{path}, line {line_of_token[bad]}: id {tokens[bad].decode()!r} is not a non-negative "
                        "integer; expected lines of space-separated integer ids `user item item ...`")
    try:
        ids = tokens.astype(np.int64) if all_digits.all() else np.char.decode(tokens, "utf-8").astype(object)
    except OverflowError:
        raise DataError(f"{path}: an id does not fit in 64 bits") from None
    line_users = ids[first]
    dup = pd.Index(line_users).duplicated()
    if dup.any():
        raise DataError(f"{path}, line {line_of_token[first][dup][0]}: user {line_users[dup][0]} has a second "
                        "line; expected one line per user")
    line_index = np.cumsum(first) - 1
    line_start = np.flatnonzero(first)
    event = ~first
    positions = (np.arange(len(ids)) - line_start[line_index] - 1)[event]
    return line_users, line_users[line_index[event]], ids[event], positions


# generic tables -------------------------------------------------------------------------------------------
def load_table(path: str | Path, user: str = "user", item: str = "item", value: str | None = None,
               timestamp: str | None = None, sep: str | None = None,
               item_attributes: pd.DataFrame | str | Path | None = None) -> Interactions:
    """A CSV/TSV (separator sniffed when None; .gz/.bz2/.xz read) or Parquet table, columns named by the mapping.

    `timestamp` may hold numbers (seconds) or date strings (parsed by pandas, naive times taken as UTC).
    `item_attributes`: a frame indexed by raw item id, or a table file with an `item` column.
    Without `value`, values are 1.0; without `timestamp`, timestamps are -1.
    """
    path = _require_file(path)
    frame, first_line = _read_table(path, sep)
    where = (lambda row: f"line {row + first_line}") if first_line else (lambda row: f"row {row + 1}")
    wanted = [c for c in (user, item, value, timestamp) if c is not None]
    for col in wanted:
        if col not in frame.columns:
            raise DataError(f"{path}: missing column {col!r} (columns found: {', '.join(map(str, frame.columns))})")
    frame = frame[wanted]
    frame = frame[~frame.isna().all(axis=1)]
    if len(frame) == 0:
        raise DataError(f"{path}: no rows")
    for col in (user, item):
        empty = frame[col].isna().to_numpy()
        if empty.any():
            raise DataError(f"{path}, {where(frame.index[np.argmax(empty)])}: empty {col!r}")
    values = _number_column(frame, value, path, where) if value else np.ones(len(frame))
    stamps = _time_column(frame, timestamp, path, where) if timestamp else np.full(len(frame), -1)
    attrs = _table_attributes(item_attributes, item, path) if item_attributes is not None else None
    return _build(frame[user].to_numpy(), frame[item].to_numpy(), values, stamps, str(path), attrs)


def _read_table(path: Path, sep: str | None) -> tuple[pd.DataFrame, int | None]:
    """The table and the file line of its first row (None for Parquet)."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(path), None
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{path}: not a readable Parquet file ({_one_line(err)})") from None
    head = _head(path)
    _check_text(path, head)
    stem = name.rsplit(".", 1)[0] if name.endswith((".gz", ".bz2", ".xz")) else name
    if sep is None:
        sep = "\t" if stem.endswith((".tsv", ".tab")) else _sniff(head.decode("utf-8", errors="replace"))
    try:
        frame = pd.read_csv(path, sep=r"\s+" if sep == " " else sep, skip_blank_lines=False, encoding="utf-8")
    except Exception as err:  # noqa: BLE001
        raise DataError(_parser_message(path, sep, err)) from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas makes an index of the fields the header lacks
        raise DataError(f"{path}, line 2: expected {frame.shape[1]} {_SEP_NAMES.get(sep, repr(sep))}-separated "
                        f"fields (as in the header), found {frame.shape[1] + frame.index.nlevels}")
    return frame, 2


def _sniff(head: str) -> str:
    lines = [line for line in head.splitlines()[:50] if line.strip()]
    if len(lines) > 1 and not head.endswith("\n"):
        lines = lines[:-1]  # the last line of a 1 MiB sample may be cut
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;| ").delimiter
    except csv.Error:
        counts = {s: lines[0].count(s) for s in (",", "\t", ";", "|")} if lines else {}
        best = max(counts, key=counts.get, default=",")
        return best if counts.get(best) else ","


def _parser_message(path: Path, sep: str, err: Exception) -> str:
    sep_name = _SEP_NAMES.get(sep, repr(sep))
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if found:
        n, line, m = found.groups()
        return f"{path}, line {line}: expected {n} {sep_name}-separated fields (as in the header), found {m}"
    if isinstance(err, pd.errors.EmptyDataError):
        return f"{path}: file is empty"
    if isinstance(err, UnicodeDecodeError):
        return f"{path}: does not look like UTF-8 text; is it compressed or binary?"
    return f"{path}: cannot be read as {sep_name}-separated text ({_one_line(err)})"


def _number_column(frame: pd.DataFrame, col: str, path: Path, where) -> np.ndarray:
    numbers = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.argmax(bad))
        shown = frame[col].iloc[row]
        what = " is empty" if pd.isna(shown) or str(shown).strip() == "" else f": {shown!r} is not a number"
        raise DataError(f"{path}, {where(frame.index[row])}: column {col!r}{what}")
    return numbers


def _time_column(frame: pd.DataFrame, col: str, path: Path, where) -> np.ndarray:
    """Seconds since the epoch from numbers or date strings."""
    column = frame[col]
    numbers = pd.to_numeric(column, errors="coerce")
    if not numbers.isna().any():
        return np.floor(numbers.to_numpy(np.float64)).astype(np.int64)
    dates = pd.Series(pd.NaT, index=column.index)
    for date_format in (None, "mixed"):  # one format inferred from the first value, else each value on its own
        try:
            dates = pd.to_datetime(column, errors="coerce", utc=True, format=date_format)
        except Exception:  # noqa: BLE001 -- odd inputs: the first bad value is reported below
            continue
        if not dates.isna().any():
            break
    if dates.isna().any():
        row = int(np.argmax(dates.isna().to_numpy()))
        raise DataError(f"{path}, {where(frame.index[row])}: column {col!r}: {column.iloc[row]!r} is neither a number "
                        "nor a date")
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _table_attributes(attributes, item: str, path: Path) -> pd.DataFrame:
    if not isinstance(attributes, pd.DataFrame):
        attr_path = _require_file(attributes)
        attributes, _ = _read_table(attr_path, None)
        if item not in attributes.columns:
            raise DataError(f"{attr_path}: missing column {item!r} (columns found: "
                            f"{', '.join(map(str, attributes.columns))})")
    if item in attributes.columns:
        attributes = attributes.set_index(item)
    return attributes[~attributes.index.duplicated()]
