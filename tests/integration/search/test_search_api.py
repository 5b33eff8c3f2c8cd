"""The search function end to end on real parts: its handler built from template.yaml's environment
(shared.search.api.handler_from_env's pieces), the real dev MiniLM and CLIP text tower on ONNX Runtime,
LanceDB on a local folder, the ledger and the media in moto (DynamoDB, S3), written by the pipeline's
own Ledger; every sample event of infra/events/search/ against its expected.json."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from shared.dev.localstack import MotoServer
from shared.dev.models import setup_dev_models
from shared.search.indexes import storage_options
from shared.search.rows import ItemArtifacts, image_rows, item_rows
from shared.settings import DEFAULT_MODEL_DIR, REPO_ROOT
from tests.integration.search.world import VERSION, World

pytestmark = pytest.mark.integration

EVENTS = REPO_ROOT / "infra" / "events" / "search"
OLD = "2026-11-01-search0"
SECRET = "s3cr3t-../"
TRIP = {
    "segments": [
        {"start": 0.0, "end": 9.0, "text": "welcome aboard everyone"},
        {"start": 40.0, "end": 52.0, "text": "the ferry leaves at noon from pier seven"},
        {"start": 80.0, "end": 95.0, "text": "bring a warm coat, a storm is coming"},
    ]
}
OFFICE = {"segments": [{"start": 5.0, "end": 20.0, "text": "please pay invoice ZX4711 before friday"}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    setup_dev_models(DEFAULT_MODEL_DIR, ["minilm-l6-v2", "clip-vit-b-32-text"])
    with MotoServer(in_process=True) as moto:
        w = World(moto, tmp_path_factory.mktemp("search-api"))
        embed, clip = w.service.searchers.embed_text, w.service.searchers.clip_text
        w.upload("demo", "trip", "trip.mp4", "video", b"trip-bytes")
        w.upload("demo", "office", "office.mp4", "video", b"office-bytes")
        w.upload("demo", "car", "car.png", "image", b"png-bytes")
        w.upload("other", "secret", "s.mp4", "video", b"other-bytes")
        rows = item_rows("demo", "trip", ItemArtifacts(transcript=TRIP), embed).rows
        rows += item_rows("demo", "office", ItemArtifacts(transcript=OFFICE), embed).rows
        rows += image_rows("demo", "car", clip(["a red sports car"])[0])  # CLIP space: found by its words
        w.engine().write("demo", rows, replace_items=["trip", "office", "car"])
        other = item_rows("other", "secret", ItemArtifacts(transcript=TRIP), embed).rows
        w.engine().write("other", other, replace_items=["secret"])
        w.switch("demo", VERSION)
        w.switch("other", VERSION)
        yield w


def url_event(body: Any, *, method: str = "POST", path: str = "/search", **headers: str) -> dict:
    return {
        "version": "2.0",
        "rawPath": path,
        "headers": {"content-type": "application/json", **headers},
        "requestContext": {"http": {"method": method, "path": path}},
        "body": body if isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url.split("#", 1)[0], timeout=10) as r:
        return r.read()


def test_the_moment_comes_with_a_playable_link(world: World) -> None:
    status, body = world.call(url_event({"owner_id": "demo", "text": "when does the ferry leave", "k": 3}))
    assert status == 200, body
    top = body["hits"][0]
    assert (top["item_id"], top["start_s"]) == ("trip", 40.0) and "ferry" in top["text"]
    assert [top["text"][a:b] for a, b in top["highlights"]] == [
        "ferry",
        "leaves",
    ]  # "when does the": stop words
    assert body["spec_version"] == VERSION and body["took_ms"] > 0 and body["skipped"] == []
    assert top["media_url"].endswith("#t=40") and "X-Amz-Signature=" in top["media_url"]
    assert fetch(top["media_url"]) == b"trip-bytes"  # the presigned URL serves the source
    assert "thumbnail_url" not in top  # videos get one with scene keyframes
    # the log line has the numbers, never the text nor a URL
    log = world.log.getvalue()
    assert '"search.query.v1"' in log and "ferry" not in log and "X-Amz" not in log


def test_a_paraphrase_finds_the_moment_through_minilm(world: World) -> None:
    _, body = world.call({"owner_id": "demo", "text": "when does the boat depart", "k": 3})  # direct call
    trip = [h for h in body["hits"] if h["item_id"] == "trip"]
    assert trip[0]["start_s"] == 40.0 and "text_vec" not in str(body["skipped"])  # its best moment


def test_clip_text_tower_finds_an_image_by_its_words(world: World) -> None:
    status, body = world.call(
        {"owner_id": "demo", "text": "a red sports car", "mode": "vector", "k": 2}  # a direct invocation
    )
    assert status == 200
    car = next(h for h in body["hits"] if h["item_id"] == "car")
    assert car["channels"] == ["image_clip"] and car["media_url"].endswith("#t=0")
    assert fetch(car["thumbnail_url"]) == b"png-bytes"
    assert body["skipped"] == []  # both encoders ran


def test_owners_see_only_their_own_items(world: World) -> None:
    _, mine = world.call({"owner_id": "other", "text": "ferry leaves at noon", "k": 10})
    assert {h["item_id"] for h in mine["hits"]} == {"secret"}
    assert all("/other/secret/" in h["media_url"] for h in mine["hits"])
    _, theirs = world.call({"owner_id": "demo", "text": "ferry leaves at noon", "k": 10})
    assert "secret" not in {h["item_id"] for h in theirs["hits"]}


def test_the_owners_current_version_is_the_one_read(world: World) -> None:
    old = world.engine(OLD)
    doc = {"segments": [{"start": 1.0, "end": 2.0, "text": "an old recording of the ferry"}]}
    old.write(
        "demo",
        item_rows("demo", "trip", ItemArtifacts(transcript=doc), world.service.searchers.embed_text).rows,
    )
    try:
        world.switch("demo", OLD)
        _, body = world.call({"owner_id": "demo", "text": "ferry", "k": 5})
        assert body["spec_version"] == OLD and [h["start_s"] for h in body["hits"]] == [1.0]
    finally:
        world.switch("demo", VERSION)
    _, body = world.call({"owner_id": "demo", "text": "ferry", "k": 5})
    assert body["spec_version"] == VERSION


def test_a_removed_item_is_not_answered(world: World) -> None:
    world.upload("demo", "gone", "gone.mp4", "video", b"x")
    doc = {"segments": [{"start": 3.0, "end": 8.0, "text": "the zebra crossing by the harbour"}]}
    embed = world.service.searchers.embed_text
    world.engine().write("demo", item_rows("demo", "gone", ItemArtifacts(transcript=doc), embed).rows)
    _, body = world.call({"owner_id": "demo", "text": "zebra crossing", "k": 3})
    assert body["hits"][0]["item_id"] == "gone", body
    assert world.ledger.mark_removed("demo", "gone", "uploads/demo/gone/gone.mp4")
    _, body = world.call({"owner_id": "demo", "text": "zebra crossing", "k": 3})
    assert "gone" not in {h["item_id"] for h in body["hits"]}


@pytest.mark.parametrize(
    ("event", "status", "field"),
    [
        (url_event({"owner_id": "demo", "text": "x", "k": 500}), 400, "k"),
        (url_event({"owner_id": SECRET, "text": "x"}), 400, "owner_id"),
        (url_event({"owner_id": "demo", "text": SECRET * 100}), 400, "text"),
        (url_event({"owner_id": "demo", "text": "x", SECRET: 1}), 400, "request"),
        (url_event(["not", "an", "object"]), 400, "request"),
        (url_event('{"owner_id": "demo", "te'), 400, "body"),
        (url_event({"owner_id": "nobody", "text": "x"}), 404, "owner_id"),
        (url_event({"owner_id": "demo", "person": "nobody"}), 404, "person"),
        (url_event({"owner_id": "demo", "text": "x", "pad": SECRET * 2000}), 413, "body"),
        (url_event({"owner_id": "demo", "text": "x"}, method="GET"), 405, None),
        (url_event({"owner_id": "demo", "text": "x"}, path="/admin"), 404, "path"),
        (url_event({"owner_id": "demo", "text": "x"}, **{"content-type": "text/plain"}), 415, None),
    ],
)
def test_bad_requests_are_4xx_naming_the_field_and_echo_nothing(world: World, event, status, field) -> None:
    got, body = world.call(event)
    assert got == status, body
    assert body["error"]["field"] == field
    assert "s3cr3t" not in json.dumps(body)


def test_storage_options_for_lancedb() -> None:
    local = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_DEFAULT_REGION": "eu-west-1"}
    local |= {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    assert storage_options(local) == {
        "aws_region": "eu-west-1",
        "aws_endpoint": "http://127.0.0.1:5000",
        "allow_http": "true",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
    }
    # in Lambda: the region only; LanceDB reads the role's rotating credentials itself
    lam = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "ASIA", "AWS_SESSION_TOKEN": "t"}
    assert storage_options(lam) == {"aws_region": "eu-west-1"}


# ---------------------------------------------------------------------- the sample events


CASES = sorted(json.loads((EVENTS / "expected.json").read_text()).items())


def test_every_sample_event_has_an_expectation() -> None:
    files = {p.name for p in EVENTS.glob("*.json")} - {"expected.json"}
    assert files == {name for name, _ in CASES}


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_sample_event(world: World, name: str, expected: dict) -> None:
    status, body = world.call(json.loads((EVENTS / name).read_text()))
    assert status == expected["statusCode"], body
    if "error" in expected:
        assert {k: body["error"][k] for k in expected["error"]} == expected["error"]
    if "top" in expected:
        top = body["hits"][0]
        assert {k: top[k] for k in expected["top"]} == expected["top"]
        assert top["media_url"].endswith(f"#t={expected['top']['start_s']:g}")
