"""Loaders: the public formats load with the right counts and attributes, and bad files fail with one line
that names the file and the line."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from genrec.data.interactions import DataError
from genrec.data.loaders import load_lightgcn, load_movielens, load_sequences, load_table
from tests.conftest import shared_data


def write(path, text: str | bytes, encoding: str = "utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def one_line_error(call, *words: str) -> str:
    """Run `call`, expect a DataError whose message is one line holding every word; no chained traceback."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert info.value.__cause__ is None and (info.value.__suppress_context__ or info.value.__context__ is None)
    return message


# real data --------------------------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_movielens_100k_counts_and_attributes():
    data = load_movielens(shared_data("movielens-100k"))
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1_682)
    assert np.array_equal(data.item_ids.raw, np.arange(1, 1683))  # sorted, so index = id - 1
    assert sorted(np.unique(data.values)) == [1, 2, 3, 4, 5]
    assert data.has_timestamps
    items = data.item_attributes
    assert len(items) == 1_682
    assert sum(c.startswith("genre_") for c in items.columns) == 19
    toy_story = items.iloc[0]
    assert toy_story["title"] == "Toy Story (1995)" and toy_story["year"] == 1995
    assert toy_story["genres"] == "Animation|Children's|Comedy"
    assert toy_story["genre_Comedy"] and not toy_story["genre_Action"]
    users = data.user_attributes
    assert list(users.columns) == ["age", "gender", "occupation", "zip"]
    assert users.iloc[0].tolist() == [24, "M", "technician", "85711"]


@pytest.mark.shared_data
def test_movielens_100k_fold_file_takes_attributes_from_its_folder():
    data = load_movielens(shared_data("movielens-100k") / "u1.base")
    assert len(data) == 80_000
    assert data.item_attributes is not None and len(data.item_attributes) == data.n_items


@pytest.mark.shared_data
def test_lightgcn_gowalla_counts_and_shared_maps():
    train, test = load_lightgcn(shared_data("lightgcn-gowalla"))
    assert (len(train), len(test)) == (810_128, 217_242)
    assert train.user_ids is test.user_ids and train.item_ids is test.item_ids
    assert (train.n_users, train.n_items) == (29_858, 40_981)
    assert np.array_equal(train.item_ids.raw, np.arange(40_981))  # item index i is item id i
    assert np.array_equal(train.user_ids.raw, np.arange(29_858))
    assert (train.values == 1).all() and (test.timestamps == -1).all()
    assert train.items[0] == 0 and train.users[0] == 0


@pytest.mark.shared_data
@pytest.mark.parametrize("name, counts", [("Beauty", (22_363, 12_101, 198_502)), ("LastFM", (1_090, 3_646, 52_551))])
def test_s3rec_sequences_counts(name, counts):
    data = load_sequences(shared_data("s3rec-sequences") / f"{name}.txt")
    assert (data.n_users, data.n_items, len(data)) == counts
    first_user = data.histories().sequence(0)
    assert np.array_equal(data.item_ids.raw[first_user][:2], [1, 2])  # Beauty and LastFM both start `1 1 2 ...`


# synthetic MovieLens releases -------------------------------------------------------------------------------
def test_movielens_1m_dat_format(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(tmp_path / "movies.dat",
          "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
          "1193::One Flew Over the Cuckoo's Nest: \"Caf\u00e9\" (1975)::Drama\n", encoding="latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    data = load_movielens(tmp_path)
    assert (len(data), data.n_users, data.n_items) == (3, 2, 2)
    assert list(data.item_ids.raw) == [661, 1193]
    frame = data.to_frame()
    assert frame.iloc[1].tolist() == [1, 661, 3.0, 978302109]
    items = data.item_attributes
    assert items["title"][1] == "One Flew Over the Cuckoo's Nest: \"Caf\u00e9\" (1975)"  # latin-1, quotes, colon
    assert list(items["year"]) == [1996, 1975]
    assert list(items["genres"]) == ["Animation|Children's|Musical", "Drama"]
    assert list(items["genre_Drama"]) == [False, True]
    assert data.user_attributes.iloc[1].tolist() == [56, "M", 16, "70072"]


def test_movielens_10m_dat_has_half_stars_and_no_users(tmp_path):
    write(tmp_path / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n")
    write(tmp_path / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime\n")
    data = load_movielens(tmp_path / "ratings.dat")
    assert list(data.values) == [5.0, 4.5]
    assert data.user_attributes is None
    assert list(data.item_attributes["title"]) == ["Boomerang (1992)", "Net, The (1995)"]


def test_movielens_20m_csv_format(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n"
          "\n7,2,4.0,1112484819\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n'
          '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",(no genres listed)\n')
    data = load_movielens(tmp_path)
    assert (len(data), data.n_users, data.n_items) == (3, 2, 2)  # the blank line is skipped
    assert list(data.user_ids.raw) == [1, 7]
    items = data.item_attributes
    assert items["title"][1].startswith("City of Lost Children, The")
    assert list(items["year"]) == [1995, 1995]
    assert list(items["genres"]) == ["Adventure|Children|Fantasy", ""]
    assert "genre_(no genres listed)" not in items.columns and items["genre_Fantasy"].tolist() == [True, False]


def test_movielens_csv_columns_in_any_order(tmp_path):
    write(tmp_path / "ratings.csv", "timestamp,rating,movieId,userId\n1112486027,3.5,2,1\n")
    assert load_movielens(tmp_path).to_frame().values.tolist() == [[1, 2, 3.5, 1112486027]]


def test_movielens_min_rating_keeps_high_ratings_and_drops_empty_users(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t100\n1\t11\t2\t101\n2\t11\t3\t102\n3\t12\t4\t103\n")
    data = load_movielens(tmp_path, min_rating=4)
    assert list(data.to_frame()["item"]) == [10, 12]
    assert list(data.user_ids.raw) == [1, 3] and data.n_items == 2


def test_movielens_folder_without_ratings(tmp_path):
    one_line_error(lambda: load_movielens(tmp_path), str(tmp_path), "u.data", "ratings.csv")


# bad MovieLens files --------------------------------------------------------------------------------------
BAD_U_DATA = [
    ("missing", None, ["no such file"]),
    ("empty", "", ["file is empty"]),
    ("blank", "\n\n", ["file is empty"]),
    ("non-numeric user", "1\t2\t3\t4\nabc\t2\t3\t4\n", ["line 2", "user 'abc' is not an integer"]),
    ("empty rating", "1\t2\t3\t4\n1\t3\t4\t5\n1\t4\t\t6\n", ["line 3", "empty rating"]),
    ("NaN rating", "1\t2\tnan\t4\n", ["line 1", "rating is NaN"]),
    ("comma file", "1,2,3,4\n", ["line 1", "expected 4 tab-separated fields", "looks comma-separated", "'1,2,3,4'"]),
    ("truncated", "1\t2\t3\t4\n1\t2\t3\n", ["line 2", "truncated line", "found 3"]),
    ("too many", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", ["line 2", "expected 4", "found 5"]),
    ("NUL bytes", b"1\t2\t3\t4\n\x00\x00\x01\x02", ["line 2", "does not look like text"]),
    ("not UTF-8", b"1\t2\t3\t4\n\xff\xfe\xfa\n", ["line 2", "does not look like UTF-8 text"]),
]


@pytest.mark.parametrize("case, content, words", BAD_U_DATA, ids=[c[0] for c in BAD_U_DATA])
def test_bad_u_data_fails_with_one_line(tmp_path, case, content, words):
    path = tmp_path / "u.data"
    if content is not None:
        write(path, content)
    one_line_error(lambda: load_movielens(path), str(path), *words)


def test_bad_dat_and_csv_ratings(tmp_path):
    dat = write(tmp_path / "a" / "ratings.dat", "1::2::3::4\n1::2::3\n")
    one_line_error(lambda: load_movielens(dat), "line 2", "truncated line", "'::'-separated")
    dat = write(tmp_path / "a" / "ratings.dat", "1::2::3::4\n1::2::3::4::5\n")
    one_line_error(lambda: load_movielens(dat), "line 2", "expected 4 '::'-separated fields", "found 5")
    dat = write(tmp_path / "b" / "ratings.dat", "1\t2\t3\t4\n")
    one_line_error(lambda: load_movielens(dat), "line 1", "'::'-separated", "tab-separated")
    csv = write(tmp_path / "c" / "ratings.csv", "userId,movieId,timestamp\n1,2,3\n")
    one_line_error(lambda: load_movielens(csv), "missing column 'rating'", "userId, movieId, timestamp")
    csv = write(tmp_path / "d" / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,x2,3,4\n")
    one_line_error(lambda: load_movielens(csv), "line 3", "movieId 'x2' is not an integer")
    csv = write(tmp_path / "e" / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,,4\n")
    one_line_error(lambda: load_movielens(csv), "line 2", "empty rating")


def test_bad_side_file_is_named(tmp_path):
    write(tmp_path / "ratings.dat", "1::2::3::4\n")
    write(tmp_path / "movies.dat", "x::Toy Story (1995)::Comedy\n")
    one_line_error(lambda: load_movielens(tmp_path), "movies.dat", "line 1", "'x' is not an integer")
    write(tmp_path / "movies.dat", "1::Toy Story (1995)::Comedy::extra\n")
    one_line_error(lambda: load_movielens(tmp_path), "movies.dat", "expected 3 '::'-separated fields")


# LightGCN and sequence files ------------------------------------------------------------------------------
def test_lightgcn_pair_shares_sorted_union_maps(tmp_path):
    write(tmp_path / "train.txt", "0 10 2\n1 2\n3\n")
    write(tmp_path / "test.txt", "0 7\n1 10 \n4 2\n")
    train, test = load_lightgcn(tmp_path)
    assert list(train.user_ids.raw) == [0, 1, 3, 4] and list(train.item_ids.raw) == [2, 7, 10]
    assert train.user_ids is test.user_ids and train.item_ids is test.item_ids
    assert train.to_frame()[["user", "item"]].values.tolist() == [[0, 10], [0, 2], [1, 2]]
    assert test.to_frame()[["user", "item"]].values.tolist() == [[0, 7], [1, 10], [4, 2]]
    assert (train.timestamps == -1).all() and (test.values == 1).all()
    again, _ = load_lightgcn(tmp_path / "train.txt", test_path=tmp_path / "test.txt")
    assert again.fingerprint() == train.fingerprint()


def test_bad_lightgcn_files(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 2 x3\n")
    write(tmp_path / "test.txt", "0 1\n")
    one_line_error(lambda: load_lightgcn(tmp_path), "train.txt, line 2", "'x3' is not a non-negative integer")
    write(tmp_path / "train.txt", "0 1 2\n")
    (tmp_path / "test.txt").unlink()
    one_line_error(lambda: load_lightgcn(tmp_path), "test.txt", "no such file")
    write(tmp_path / "test.txt", "")
    one_line_error(lambda: load_lightgcn(tmp_path), "test.txt", "file is empty")
    write(tmp_path / "test.txt", b"0 1\n\x89PNG\x00\x00")
    one_line_error(lambda: load_lightgcn(tmp_path), "test.txt, line 2", "does not look like text")
    write(tmp_path / "test.txt", "0 1\n0 2\n")
    one_line_error(lambda: load_lightgcn(tmp_path), "test.txt, line 2", "second line")


def test_sequences_keep_order_and_repeats(tmp_path):
    path = write(tmp_path / "seq.txt", "7 3 1 3\n2 b5\n")
    data = load_sequences(path)  # a non-numeric token: string ids, sorted
    assert list(data.user_ids.raw) == ["2", "7"] and list(data.item_ids.raw) == ["1", "3", "b5"]
    assert data.to_frame().values.tolist() == [["7", "3", 1.0, 0], ["7", "1", 1.0, 1], ["7", "3", 1.0, 2],
                                               ["2", "b5", 1.0, 0]]
    numeric = load_sequences(write(tmp_path / "n.txt", "1 10 9 10\n2 9\n"))
    assert list(numeric.item_ids.raw) == [9, 10]
    assert list(numeric.histories().sequence(0)) == [1, 0, 1]


def test_bad_sequence_files(tmp_path):
    one_line_error(lambda: load_sequences(tmp_path / "none.txt"), "none.txt", "no such file")
    one_line_error(lambda: load_sequences(write(tmp_path / "e.txt", " \n")), "e.txt", "file is empty")
    one_line_error(lambda: load_sequences(write(tmp_path / "b.txt", b"1 2\n\xc3\x28")), "b.txt, line 2", "UTF-8")


# generic tables -------------------------------------------------------------------------------------------
def test_table_csv_sniffs_separator_and_parses_dates(tmp_path):
    path = write(tmp_path / "events.csv", "who;what;when;stars\nann;x1;2024-01-02 00:00:00;4\n"
                 "bob;x2;2024-01-01T00:00:10Z;5\n")
    data = load_table(path, user="who", item="what", value="stars", timestamp="when")
    assert list(data.user_ids.raw) == ["ann", "bob"]
    assert list(data.timestamps) == [1704153600, 1704067210]
    assert list(data.values) == [4.0, 5.0]


def test_table_tsv_and_parquet_and_attributes(tmp_path):
    frame = pd.DataFrame({"user": [5, 5, 6], "item": [20, 10, 20], "ts": [3, 1, 2]})
    tsv = tmp_path / "events.tsv"
    frame.to_csv(tsv, sep="\t", index=False)
    parquet = tmp_path / "events.parquet"
    frame.to_parquet(parquet)
    attrs = write(tmp_path / "items.csv", "item,kind\n10,book\n20,film\n30,game\n")
    a = load_table(tsv, timestamp="ts", item_attributes=attrs)
    b = load_table(parquet, timestamp="ts", item_attributes=pd.DataFrame({"kind": ["book", "film"]}, index=[10, 20]))
    assert a.fingerprint() == b.fingerprint()
    assert list(a.item_ids.raw) == [10, 20] and list(a.item_attributes["kind"]) == ["book", "film"]
    assert (a.values == 1).all() and list(a.timestamps) == [3, 1, 2]


def test_table_reads_gzip_and_string_ids(tmp_path):
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(b"user\titem\tscore\nu1\ti9\t0.5\nu2\ti9\t2\n"))
    data = load_table(path, value="score")
    assert list(data.user_ids.raw) == ["u1", "u2"] and list(data.values) == [0.5, 2.0]


BAD_TABLES = [
    ("events.csv", "user,item\n", {}, ["no rows"]),
    ("events.csv", "user,thing\n1,2\n", {}, ["missing column 'item'", "columns found: user, thing"]),
    ("events.csv", "user,item,r\n1,2,5\n1,3,\n", {"value": "r"}, ["line 3", "column 'r' is empty"]),
    ("events.csv", "user,item,r\n1,2,5\n1,3,lots\n", {"value": "r"}, ["line 3", "column 'r': 'lots' is not a number"]),
    ("events.csv", "user,item,t\n1,2,2024-01-01\n1,3,soon\n", {"timestamp": "t"}, ["line 3", "'soon' is neither"]),
    ("events.csv", "user,item\n1,2\n,3\n", {}, ["line 3", "empty 'user'"]),
    ("events.csv", "user,item\n1,2\n1,2,3\n", {}, ["line 3", "expected 2 comma-separated", "found 3"]),
    ("events.csv", "user,item\n1,2,3,4\n", {}, ["line 2", "expected 2 comma-separated", "found 4"]),
    ("events.csv", b"user,item\n\x00\x01\x02", {}, ["does not look like text"]),
    ("events.parquet", b"PAR1 not really", {}, ["not a readable Parquet file"]),
]


@pytest.mark.parametrize("name, content, mapping, words", BAD_TABLES)
def test_bad_tables_fail_with_one_line(tmp_path, name, content, mapping, words):
    path = write(tmp_path / name, content)
    one_line_error(lambda: load_table(path, **mapping), str(path), *words)
