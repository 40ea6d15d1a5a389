"""Table-like inputs: what a string names, WebDataset brace patterns, the image column."""

from __future__ import annotations

import pytest

from captionkit.errors import InputError
from captionkit.inputs.tables import (
    carried_name,
    classify,
    expand_braces,
    is_table_like,
    pick_image_column,
    read_table,
    row_id,
)


def test_brace_ranges_keep_their_zero_padding():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("s/{8..10}.tar") == ["s/8.tar", "s/9.tar", "s/10.tar"]


def test_brace_lists_and_several_groups_multiply():
    assert expand_braces("{a,b}-{0..1}.tar") == ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_what_an_input_names():
    assert classify("data.parquet").kind == "table" and classify("data.parquet").fmt == "parquet"
    assert classify("x/data.CSV").fmt == "csv"
    assert classify("data.jsonl").fmt == "json"
    assert classify("hf:org/name").location == "org/name"
    shards = classify("s/{000..001}.tar")
    assert shards.kind == "webdataset" and shards.paths == ("s/000.tar", "s/001.tar")
    assert classify("photos/").kind == "files" and classify("a.jpg").kind == "files"
    assert is_table_like(["a.jpg", "t.parquet"]) and not is_table_like(["a.jpg", "-"])


def test_an_empty_hf_name_is_one_line():
    with pytest.raises(InputError, match="hf: needs a dataset name"):
        classify("hf:")


def test_the_image_column_is_the_given_one_or_a_usual_name():
    assert pick_image_column(["id", "url", "text"], None, "t") == "url"
    assert pick_image_column(["id", "pic"], "pic", "t") == "pic"
    with pytest.raises(InputError, match="no column 'img2'"):
        pick_image_column(["id", "pic"], "img2", "t")
    with pytest.raises(InputError, match="--image-column"):
        pick_image_column(["id", "pic"], None, "t")


def test_row_ids_and_carried_names():
    assert row_id("a/b.jpg") == "a/b.jpg"
    assert row_id({"bytes": None, "path": "x.png"}) == "x.png"
    assert row_id({"bytes": b"\x89PNG", "path": "x.png"}) is None  # hashed by content
    assert row_id(b"\x89PNG") is None
    assert carried_name("caption", ("id", "caption")) == "input_caption"
    assert carried_name("license", ("id", "caption")) == "license"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_read_table_yields_rows(tmp_path, fmt):
    pa = pytest.importorskip("pyarrow", reason='needs the ray extra: pip install "captionkit[ray]"')
    table = pa.table({"path": ["a.jpg", "b.jpg"], "n": [1, 2]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif fmt == "csv":
        path.write_text("path,n\na.jpg,1\nb.jpg,2\n")
    else:
        path.write_text('{"path": "a.jpg", "n": 1}\n{"path": "b.jpg", "n": 2}\n')
    assert list(read_table(str(path), fmt)) == [
        {"path": "a.jpg", "n": 1},
        {"path": "b.jpg", "n": 2},
    ]
