"""The HTTP API through an ASGI test client: caption by upload, base64 and URL, the JSONL
fields per image, per-image errors, the shared store, listings, metrics, OpenAPI."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

from serve_helpers import captioner, make_client, one_line_error, png, upload

from captionkit.engine.sinks import StreamSink
from captionkit.serve.config import UploadLimits

JSONL_FIELDS = {
    "source",
    "text",
    "candidates",
    "backend",
    "model",
    "style",
    "prompt",
    "sha256",
    "seconds",
    "cached",
    "error",
    "extra",
}


def test_multipart_upload_answers_each_image_with_the_jsonl_fields(client):
    r = client.post("/v1/caption", files=upload("red", "blue"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backend"] == "fake"
    red, blue = body["results"]
    assert red["source"] == "red.png" and red["text"] == "a red image"
    assert blue["text"] == "a blue image"
    assert red["candidates"][0] == {"text": "a red image", "score": 0.9}
    assert set(red) >= JSONL_FIELDS and red["error"] is None
    assert set(red["timings"]) == {"window_ms", "model_ms", "total_ms"}
    assert "path" not in red  # no server paths leak


def test_answer_fields_match_the_cli_jsonl_record(client, tmp_path):
    """The same names as StreamSink's JSONL (minus the server path, plus timings)."""
    import json

    from captionkit.inputs.sources import Source
    from captionkit.types import CaptionResult

    out = tmp_path / "x.jsonl"
    sink = StreamSink("jsonl", out)
    sink.write(CaptionResult(source="a", text="t"), Source(key="a"))
    sink.close()
    cli_fields = set(json.loads(out.read_text()))
    answer = client.post("/v1/caption", files=upload("red")).json()["results"][0]
    assert set(answer) - {"timings"} == cli_fields - {"path"}


def test_a_bad_image_fails_alone(client):
    files = [*upload("red"), ("images", ("junk.png", b"not an image at all", "image/png"))]
    r = client.post("/v1/caption", files=files)
    assert r.status_code == 200
    ok, bad = r.json()["results"]
    assert ok["text"] == "a red image"
    assert bad["text"] is None and bad["error"] == "not an image Pillow can read"


def test_json_with_base64_and_a_data_url(client):
    b64 = base64.b64encode(png("green")).decode()
    r = client.post(
        "/v1/caption",
        json={
            "images": [{"base64": b64, "name": "g.png"}, {"base64": f"data:image/png;base64,{b64}"}]
        },
    )
    assert r.status_code == 200, r.text
    assert [x["text"] for x in r.json()["results"]] == ["a green image"] * 2
    assert r.json()["results"][0]["source"] == "g.png"


def test_request_settings_reach_the_backend(client):
    r = client.post(
        "/v1/caption",
        json={
            "images": [{"base64": base64.b64encode(png()).decode()}],
            "style": "detailed",
            "prompt": "say it",
            "num_captions": 2,
            "decoding": {"max_new_tokens": 9, "num_beams": 2},
        },
    )
    assert r.status_code == 200, r.text
    request = captioner().requests[-1]
    assert (request.style, request.prompt, request.num_captions) == ("detailed", "say it", 2)
    assert (request.decoding.max_new_tokens, request.decoding.num_beams) == (9, 2)


def test_multipart_settings_fields(client):
    r = client.post(
        "/v1/caption",
        files=upload("red"),
        data={"style": "social", "decoding": '{"max_new_tokens": 7}', "num_captions": "2"},
    )
    assert r.status_code == 200, r.text
    request = captioner().requests[-1]
    assert (request.style, request.decoding.max_new_tokens, request.num_captions) == (
        "social",
        7,
        2,
    )


def test_invalid_settings_are_422_one_line(client):
    b64 = base64.b64encode(png()).decode()
    cases = [
        {"decoding": {"top_p": 5}},
        {"decoding": {"colour": 1}},
        {"num_captions": 0},
        {"style": "nonsense"},
        {"unknown_field": 1},
    ]
    for extra in cases:
        r = client.post("/v1/caption", json={"images": [{"base64": b64}], **extra})
        one_line_error(r, 422)
    one_line_error(client.post("/v1/caption", json={"images": [{"base64": "%%%"}]}), 422)
    one_line_error(client.post("/v1/caption", json={"images": [{}]}), 422)
    one_line_error(
        client.post("/v1/caption", content=b"x", headers={"content-type": "text/plain"}), 415
    )
    assert client.post("/v1/caption", files=upload("red")).status_code == 200  # still serving


def test_backend_options_only_when_the_server_allows_them(fake):
    b64 = base64.b64encode(png()).decode()
    body = {"images": [{"base64": b64}], "options": {"tag": "!"}}
    with make_client() as c:
        message = one_line_error(c.post("/v1/caption", json=body), 422)
        assert "tag" in message and "not allowed" in message
    with make_client(allow_options=("tag",)) as c:
        r = c.post("/v1/caption", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == "a red image!"
        plain = c.post("/v1/caption", json={"images": [{"base64": b64}]}).json()
        assert plain["results"][0]["text"] == "a red image"  # the main model is untouched
        one_line_error(c.post("/v1/caption", json={**body, "options": {"tag": 5}}), 422)


def test_same_image_same_settings_is_answered_from_the_store(fake, tmp_path):
    store = tmp_path / "store.sqlite"
    with make_client(run={"store": str(store)}) as c:
        first = c.post("/v1/caption", files=upload("red")).json()["results"][0]
        second = c.post("/v1/caption", files=upload("red")).json()["results"][0]
        assert first["cached"] is False and second["cached"] is True
        assert second["text"] == first["text"]
        assert captioner().captioned == ["red"]  # the model ran once
    with make_client(run={"store": str(store)}) as c:  # a new process, the same store
        assert c.post("/v1/caption", files=upload("red")).json()["results"][0]["cached"]
        assert captioner().captioned == []


def test_concurrent_clients_share_batches(fake):
    """20 clients with one image each: the micro-batcher serves them in batches."""
    with make_client(max_wait_ms=50) as c:
        captioner().caption_delay = 0.05
        start = threading.Barrier(20)

        def one(i: int) -> int:
            start.wait()
            return c.post("/v1/caption", files=upload("red" if i % 2 else "blue")).status_code

        with ThreadPoolExecutor(20) as pool:
            assert set(pool.map(one, range(20))) == {200}
        sizes = captioner().batch_sizes
        assert sum(sizes) == 20 and max(sizes) > 1 and len(sizes) < 20
        metrics = c.get("/v1/metrics").json()
        assert metrics["batches"]["mean_size"] > 1
        assert sum(int(k) * v for k, v in metrics["batches"]["sizes"].items()) == 20


def test_listings_health_and_metrics(client):
    health = client.get("/v1/health").json()
    assert health == {
        "status": "ok",
        "backend": "fake",
        "model": "fake-model",
        "pending": 0,
        "auth": False,
    }
    styles = client.get("/v1/styles").json()
    assert styles["default"] == "short" and {"short", "social"} <= {
        s["name"] for s in styles["styles"]
    }
    backends = client.get("/v1/backends").json()
    assert backends["loaded"]["name"] == "fake"
    assert "grounded" in {b["name"] for b in backends["available"]}
    client.post("/v1/caption", files=upload("red", "blue"))
    client.post("/v1/caption", files=upload("red"))  # no store: captioned again
    metrics = client.get("/v1/metrics").json()
    assert metrics["requests"]["by_status"] == {"200": 2}
    assert metrics["images"]["captioned"] == 3
    assert metrics["latency_ms"]["window"] == 2 and metrics["latency_ms"]["p50"] > 0
    text = client.get("/v1/metrics?format=prometheus").text
    assert 'captionkit_requests_total{status="200"} 2' in text


def test_openapi_is_served_with_versioned_paths(client):
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/v1/caption", "/v1/health", "/v1/styles", "/v1/backends", "/v1/metrics"} <= paths
    content = schema["paths"]["/v1/caption"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>captionkit</title>" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_sidecars_zip_names_follow_the_sidecar_rule(client):
    import io
    import zipfile

    items = [
        {"source": "a.jpg", "text": "one"},
        {"source": "b.jpg", "text": "two "},
        {"source": "b.png", "text": "three"},
        {"source": "../../etc/passwd", "text": "four"},
    ]
    r = client.post("/v1/sidecars.zip", json={"items": items})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(zf.namelist()) == ["a.txt", "b.jpg.txt", "b.png.txt", "etc/passwd.txt"]
    assert zf.read("b.jpg.txt") == b"two\n"


def test_limits_are_listed_for_the_page(fake):
    with make_client(UploadLimits(max_images=3)) as c:
        assert c.get("/v1/styles").json()["limits"]["max_images"] == 3
