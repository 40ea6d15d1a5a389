"""``--root``: browse images with their sidecars, caption the ones without, save edits
atomically, and never read or write outside the root (traversal, symlinks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serve_helpers import make_client, one_line_error

from helpers.fakes import write_image


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "photos"
    write_image(root / "red.png", "red")
    write_image(root / "sub" / "blue.png", "blue")
    (root / "sub" / "blue.txt").write_text("a blue square\n")
    write_image(root / ".hidden" / "green.png", "green")
    outside = write_image(tmp_path / "secret" / "white.png", "white")
    (tmp_path / "secret" / "white.txt").write_text("secret\n")
    os.symlink(outside, root / "escape.png")  # a symlinked image that leads out
    os.symlink(tmp_path / "secret", root / "linkdir")
    return root


@pytest.fixture
def rooted(fake, root):
    with make_client(root=root) as c:
        yield c


def test_listing_shows_images_and_their_sidecars_only_inside(rooted):
    images = rooted.get("/v1/files").json()["images"]
    assert images == [
        {"path": "red.png", "sidecar": "red.txt", "caption": None},
        {"path": "sub/blue.png", "sidecar": "sub/blue.txt", "caption": "a blue square"},
    ]


def test_caption_missing_and_save(rooted, root):
    r = rooted.post("/v1/files/caption", json={"paths": ["red.png", "sub/blue.png"], "save": True})
    assert r.status_code == 200, r.text
    red, blue = r.json()["results"]
    assert red["text"] == "a red image" and red["saved"] == "red.txt"
    assert "saved" not in blue  # it had a sidecar: never overwritten by "caption missing"
    assert (root / "red.txt").read_text() == "a red image\n"
    assert (root / "sub" / "blue.txt").read_text() == "a blue square\n"


def test_save_an_edited_sidecar_atomically(rooted, root):
    r = rooted.put(
        "/v1/files/sidecar", json={"path": "sub/blue.png", "text": "a blue\nsquare, edited "}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "path": "sub/blue.png",
        "sidecar": "sub/blue.txt",
        "caption": "a blue square, edited",
    }
    assert (root / "sub" / "blue.txt").read_text() == "a blue square, edited\n"
    assert not list(root.rglob(".*.tmp"))  # the temporary twin is gone
    assert rooted.get("/v1/files").json()["images"][1]["caption"] == "a blue square, edited"


@pytest.mark.parametrize(
    "path",
    [
        "../secret/white.png",
        "/etc/passwd",
        "sub/../../secret/white.png",
        "escape.png",
        "linkdir/white.png",
        ".hidden/green.png",
        "sub\\..\\..\\x.png",
        "a\x00.png",
    ],
)
def test_traversal_refused_everywhere(rooted, root, tmp_path, path):
    before = (tmp_path / "secret" / "white.txt").read_text()
    r = rooted.put("/v1/files/sidecar", json={"path": path, "text": "pwned"})
    assert r.status_code in (403, 404)
    one_line_error(r, r.status_code)
    assert rooted.get("/v1/files/image", params={"path": path}).status_code in (403, 404)
    r = rooted.post("/v1/files/caption", json={"paths": [path]})
    assert r.status_code in (403, 404)
    assert (tmp_path / "secret" / "white.txt").read_text() == before
    assert not (tmp_path / "secret" / "white.txt.tmp").exists()


def test_a_sidecar_symlinked_out_of_the_root_is_not_written(rooted, root, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    os.symlink(target, root / "red.txt")
    r = rooted.put("/v1/files/sidecar", json={"path": "red.png", "text": "pwned"})
    assert "outside --root" in one_line_error(r, 403, "Forbidden")
    assert target.read_text() == "keep\n"


def test_thumbnails_are_served_from_inside(rooted, root):
    r = rooted.get("/v1/files/image", params={"path": "red.png"})
    assert r.status_code == 200 and r.content == (root / "red.png").read_bytes()
    one_line_error(rooted.get("/v1/files/image", params={"path": "nope.png"}), 404, "NotFound")


def test_files_routes_exist_only_with_root(client):
    assert client.get("/v1/files").status_code == 404
