"""MovieLens, every release: 100K `u.data`, 1M/10M `ratings.dat`, 20M/25M/32M/latest `ratings.csv`, with item
attributes (title, year, genres) and user attributes where the release has them. The release is detected from
the files present."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.data._textio import (
    _build,
    _check_text,
    _explain,
    _head,
    _one_line,
    _read_text_table,
    _require_file,
    _show,
    _small_text,
    _with_id_index,
)
from genrec.data.clean import filter_min_value
from genrec.data.interactions import DataError, Interactions

_ML_FIELDS = ("user", "item", "rating", "timestamp")
_ML_CSV_COLUMNS = ("userId", "movieId", "rating", "timestamp")
_YEAR = r"\((\d{4})(?:[-\u2013]\d{4})?\)\s*$"
_NO_GENRE = "(no genres listed)"


# MovieLens ---------------------------------------------------------------------------------------------------
def load_movielens(path: str | Path, min_rating: float | None = None) -> Interactions:
    """Any MovieLens release, from its folder or its ratings file; the release is told by the files present.

    values: ratings (0.5..5); timestamps: seconds. Item attributes: title, year (nullable), genres ('|'-joined)
    and one bool `genre_<name>` column per genre; user attributes (100K, 1M): age, gender, occupation, zip.
    `min_rating` keeps ratings >= it (users and items left without ratings are dropped).
    """
    path = Path(path)
    if path.is_dir():
        ratings = next((path / n for n in ("u.data", "ratings.dat", "ratings.csv") if (path / n).exists()), None)
        if ratings is None:
            raise DataError(f"{path}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv) in this folder")
    else:
        ratings = _require_file(path)
    kind = {".dat": "dat", ".csv": "csv"}.get(ratings.suffix.lower(), "100k")
    frame = _movielens_ratings(_require_file(ratings), kind)
    folder = ratings.parent
    items = _ml100k_items(folder) if kind == "100k" else _ml_movies(folder, kind)
    users = _ml_users(folder, kind)
    data = _build(frame["user"], frame["item"], frame["rating"], frame["timestamp"], str(ratings), items, users)
    return data if min_rating is None else filter_min_value(data, min_rating)


def _movielens_ratings(path: Path, kind: str) -> pd.DataFrame:
    """The ratings table with columns user, item (int64), rating (float64), timestamp (int64)."""
    _check_text(path, _head(path))
    if kind == "csv":
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline().strip().split(",")
        missing = [c for c in _ML_CSV_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}, line 1: missing column {missing[0]!r} (columns found: {', '.join(header)})")
        sep, fields, n_header = ",", tuple(header), 1
        options = dict(sep=",", header=0, usecols=list(_ML_CSV_COLUMNS))
    elif kind == "dat":  # '::' is split as ':' so the C reader can take it; the fields between must be empty
        sep, fields, n_header = "::", _ML_FIELDS, 0
        names = ["user", "gap1", "item", "gap2", "rating", "gap3", "timestamp"]
        options = dict(sep=":", header=None, names=names, dtype={g: np.float32 for g in names[1::2]})
    else:
        sep, fields, n_header = "\t", _ML_FIELDS, 0
        options = dict(sep="\t", header=None, names=list(_ML_FIELDS))
    int_fields = tuple(f for f in fields if f in ("user", "item", "userId", "movieId", "timestamp"))
    try:
        frame = pd.read_csv(path, skip_blank_lines=False, encoding="utf-8", engine="c", **options)
    except Exception as err:  # noqa: BLE001 -- any parser failure is explained from the file itself
        raise _explain(path, sep, fields, int_fields, n_header, _one_line(err)) from None
    if kind == "dat" and frame[["gap1", "gap2", "gap3"]].notna().to_numpy().any():
        raise _explain(path, sep, fields, int_fields, n_header, "a line is not `user::item::rating::timestamp`")
    columns = _ML_CSV_COLUMNS if kind == "csv" else _ML_FIELDS  # (csv columns come in file order)
    frame = _numeric_ratings(frame[list(columns)].set_axis(list(_ML_FIELDS), axis=1))
    if frame is None:
        raise _explain(path, sep, fields, int_fields, n_header, "a value is not a number")
    if len(frame) == 0:
        raise DataError(f"{path}: no ratings")
    return frame


def _numeric_ratings(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The frame with blank lines dropped and integer ids/timestamps, or None when any value is bad."""
    if frame.isna().to_numpy().any():
        frame = frame[~frame.isna().all(axis=1)]
    if not all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns) or frame.isna().to_numpy().any():
        return None
    for col in ("user", "item", "timestamp"):
        if frame[col].dtype.kind == "f":
            values = frame[col].to_numpy()
            if not np.array_equal(values, np.floor(values)):
                return None
            frame = frame.assign(**{col: values.astype(np.int64)})
    return frame


def _ml100k_items(folder: Path) -> pd.DataFrame | None:
    """u.item (latin-1, '|'): id, title, release date, video date, URL, then one 0/1 flag per u.genre genre."""
    path = folder / "u.item"
    if not path.exists():
        return None
    genre_file = folder / "u.genre"
    names = None
    if genre_file.exists():
        table = _read_text_table(genre_file, "|", ["name", "index"], encoding="latin-1")
        names = list(table["name"][table["name"] != ""])
    table = _read_text_table(path, "|", None, encoding="latin-1")
    n_flags = table.shape[1] - 5
    if n_flags < 1 or (names is not None and len(names) != n_flags):
        want = f"{5 + len(names)} (5 + the {len(names)} genres of u.genre)" if names else "at least 6"
        raise DataError(f"{path}: expected {want} '|'-separated fields per line, found {table.shape[1]}")
    names = names or [f"genre{i}" for i in range(n_flags)]
    flags = table.iloc[:, 5:].apply(pd.to_numeric, errors="coerce")
    if flags.isna().to_numpy().any():
        row = int(np.flatnonzero(flags.isna().any(axis=1).to_numpy())[0])
        line = "|".join(table.iloc[row].fillna(""))
        raise DataError(f"{path}, line {row + 1}: expected {table.shape[1]} '|'-separated fields ending in "
                        f"{n_flags} genre flags (0 or 1): {_show(line)}")
    flags = flags.to_numpy() > 0
    titles = table[1]
    year = titles.str.extract(_YEAR, expand=False).fillna(table[2].str.extract(r"(\d{4})\s*$", expand=False))
    attrs = pd.DataFrame({
        "title": titles,
        "year": pd.to_numeric(year, errors="coerce").astype("Int64"),
        "genres": ["|".join(np.asarray(names)[row]) for row in flags],
    })
    for j, name in enumerate(names):
        attrs[f"genre_{name}"] = flags[:, j]
    return _with_id_index(attrs, table[0], path, header=0)


def _ml_movies(folder: Path, kind: str) -> pd.DataFrame | None:
    """movies.dat (id::title::genres) or movies.csv (movieId,title,genres) with genres '|'-separated."""
    path = folder / ("movies.dat" if kind == "dat" else "movies.csv")
    if not path.exists():
        return None
    if kind == "dat":
        table = _read_text_table(path, "::", ["movieId", "title", "genres"])
        header = 0
    else:
        try:
            table = pd.read_csv(io.StringIO(_small_text(path)), dtype=str, keep_default_na=False)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{path}: cannot be read as comma-separated text ({_one_line(err)})") from None
        header = 1
        for col in ("movieId", "title", "genres"):
            if col not in table.columns:
                raise DataError(f"{path}: missing column {col!r} (columns found: {', '.join(table.columns)})")
    genres = table["genres"].where(table["genres"] != _NO_GENRE, "")
    flags = genres.str.get_dummies(sep="|").astype(bool)
    attrs = pd.DataFrame({
        "title": table["title"],
        "year": pd.to_numeric(table["title"].str.extract(_YEAR, expand=False), errors="coerce").astype("Int64"),
        "genres": genres,
    })
    attrs = pd.concat([attrs, flags.add_prefix("genre_")], axis=1)
    return _with_id_index(attrs, table["movieId"], path, header)


def _ml_users(folder: Path, kind: str) -> pd.DataFrame | None:
    """u.user (id|age|gender|occupation|zip) or users.dat (id::gender::age::occupation code::zip)."""
    if kind == "100k" and (folder / "u.user").exists():
        path = folder / "u.user"
        table = _read_text_table(path, "|", ["id", "age", "gender", "occupation", "zip"], encoding="latin-1")
    elif kind == "dat" and (folder / "users.dat").exists():
        path = folder / "users.dat"
        table = _read_text_table(path, "::", ["id", "gender", "age", "occupation", "zip"])
        table["occupation"] = pd.to_numeric(table["occupation"], errors="coerce").astype("Int64")
    else:
        return None
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype("Int64")
    attrs = table[["age", "gender", "occupation", "zip"]]
    return _with_id_index(attrs, table["id"], path, header=0)
