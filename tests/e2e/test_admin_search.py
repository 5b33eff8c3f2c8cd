"""The admin console's Search panel in headless Chromium (as tests/e2e/test_admin_console.py runs the
page): rows written straight through the engine into a local LanceDB index, the search API's own
SearchService in the console's process (real MiniLM and CLIP text tower on ONNX Runtime, the ledger and
the media on moto). A query gives cards (thumbnail, item, span, snippet with the matched words marked, all
text nodes); a click plays the source from the moment through its presigned `#t=` URL; a bad field is
named next to the form. The screenshot is docs/images/admin-search.png's source (its path is printed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from botocore.credentials import Credentials

from shared.admin.server import AdminServer, in_process_search
from shared.dev.localstack import MotoServer
from shared.dev.media import make_image_bytes, make_video
from shared.dev.models import setup_dev_models
from shared.pipeline.keys import thumbnail_key
from shared.search.rows import ItemArtifacts, image_rows, item_rows, scene_texts
from shared.settings import DEFAULT_MODEL_DIR
from tests.e2e.test_admin_console import XSS, chromium, css, css_all, page_errors, wait_for
from tests.integration.search.world import VERSION, World
from tests.unit.admin.fake_api import REGION, SECRETS, FakeApi

pytestmark = pytest.mark.e2e

SCENES = [(0.0, 20.0), (20.0, 40.0), (40.0, 60.0)]
TRIP = {
    "duration": 60.0,
    "segments": [
        {"start": 2.0, "end": 9.0, "text": "welcome aboard everyone, find a seat"},
        {"start": 40.0, "end": 52.0, "text": "the ferry leaves at noon from pier seven"},
    ],
}


def pooled(rows: np.ndarray) -> np.ndarray:
    """A scene-aligned artifact: row 0 the renormalised mean, then the scenes' rows."""
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    mean = rows.mean(axis=0)
    return np.vstack([mean / np.linalg.norm(mean), rows]).astype(np.float32)


def search(d, owner: str, text: str, k: str = "10") -> None:
    for box, value in (("#sr-owner", owner), ("#sr-text", text), ("#sr-k", k)):
        css(d, box).clear()
        css(d, box).send_keys(value)
    css(d, "#sr-go").click()


def test_search_panel_finds_and_plays_the_moment(tmp_path: Path) -> None:
    setup_dev_models(DEFAULT_MODEL_DIR, ["minilm-l6-v2", "clip-vit-b-32-text"])
    video = make_video(tmp_path / "trip.webm", seconds=60, fps=1, size=(160, 90), codec="vp9").path
    api = FakeApi().start()
    try:
        with MotoServer(in_process=True) as moto:
            w = World(moto, tmp_path)
            embed, clip = w.service.searchers.embed_text, w.service.searchers.clip_text
            w.upload("demo", "trip", "trip.webm", "video", video.read_bytes(), "video/webm")
            w.upload("demo", "harbour", "harbour.png", "image", make_image_bytes((160, 120)), "image/png")
            # the trip's three scenes: keyframe CLIP vectors, the words said in each (scene_text), the
            # keyframes' JPEGs where the scenes channel PUTs them
            texts = scene_texts(TRIP["segments"], SCENES)
            art = ItemArtifacts(
                transcript=TRIP,
                # keyframe vectors far from any query (the dev CLIP text tower has random weights)
                scenes=pooled(np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)),
                scene_text=pooled(embed([t or "-" for t in texts])),
                scene_spans=[list(s) for s in SCENES],
            )
            rows = item_rows("demo", "trip", art, embed).rows
            for i in range(len(SCENES)):
                key = thumbnail_key(VERSION, "scenes", "demo", "trip", i)
                w.s3.put_object(
                    Bucket=w.bucket, Key=key, Body=make_image_bytes((96, 64)), ContentType="image/jpeg"
                )
            rows += image_rows("demo", "harbour", clip(["the ferry at the harbour"])[0])
            w.engine().write("demo", rows, replace_items=["trip", "harbour"])
            w.upload("mallory", "x", "x.webm", "video", video.read_bytes(), "video/webm")
            hostile = {"segments": [{"start": 1.0, "end": 4.0, "text": XSS + " tickets are sold on board"}]}
            w.engine().write(
                "mallory", item_rows("mallory", "x", ItemArtifacts(transcript=hostile), embed).rows
            )
            for owner in ("demo", "mallory"):
                w.switch(owner, VERSION)
            creds = Credentials(*next(iter(SECRETS.items())))
            with (
                AdminServer(
                    api.url,
                    creds,
                    REGION,
                    search=in_process_search(w.service),
                    media_origins=(moto.endpoint,),
                ) as srv,
                chromium(tmp_path) as d,
            ):
                d.get(srv.url)
                wait_for("the owners", lambda: css(d, '#owners-body tr[data-owner-id="o1"]'))
                search(d, "demo", "when does the ferry leave")
                wait_for("the cards", lambda: css_all(d, "#sr-results li.card"))
                first = css_all(d, "#sr-results li.card")[0]
                assert (first.get_attribute("data-item-id"), first.get_attribute("data-start")) == (
                    "trip",
                    "40",
                )
                # the moment holds the third scene (40-60 s, where the sentence is said): its span, and
                # its keyframe as the card's thumbnail
                assert first.find_element("css selector", ".span").text == "0:40–1:00"
                marks = [m.text for m in first.find_elements("css selector", ".snippet mark")]
                assert marks == ["ferry", "leaves"]
                key = thumbnail_key(VERSION, "scenes", "demo", "trip", 2)
                scene_thumb = first.find_element("css selector", "img.thumb")
                assert scene_thumb.get_attribute("src").startswith(f"{moto.endpoint}/{w.bucket}/{key}?")
                wait_for(
                    "the keyframe", lambda: d.execute_script("return arguments[0].naturalWidth", scene_thumb)
                )
                # the image's card shows its thumbnail, loaded from moto's S3 (the CSP lets that origin in)
                thumb = css(d, '#sr-results li.card[data-item-id="harbour"] img.thumb')
                assert thumb.get_attribute("src").startswith(moto.endpoint + "/")
                wait_for("the thumbnail", lambda: d.execute_script("return arguments[0].naturalWidth", thumb))
                # a click plays the source from the moment: the presigned URL ends in #t=40
                first.click()
                video_el = css(d, "#sr-video")
                assert video_el.get_attribute("src").endswith("#t=40")
                at = wait_for(
                    "the video at 0:40",
                    lambda: d.execute_script(
                        "return arguments[0].readyState >= 1 && arguments[0].currentTime", video_el
                    ),
                )
                assert 39.5 <= at <= 45, at
                d.execute_script("arguments[0].pause()", video_el)
                shot = tmp_path / "admin-search.png"
                css(d, "#search").screenshot(str(shot))
                print(f"\nadmin search screenshot: {shot}")
                # an image's card shows the image, nothing plays
                css(d, '#sr-results li.card[data-item-id="harbour"]').click()
                still = wait_for("the image", lambda: css(d, "#sr-still img"))
                assert (
                    still.get_attribute("src") == thumb.get_attribute("src") and not video_el.is_displayed()
                )
                # a bad field is named next to the form, its value never echoed
                search(d, "demo", "ferry", k="500")
                wait_for("the field error", lambda: css(d, "#sr-field-error").text)
                assert css(d, "#sr-field-error").get_attribute("data-field") == "k"
                assert (
                    css(d, "#sr-k").get_attribute("aria-invalid") == "true"
                    and "500" not in css(d, "#sr-field-error").text
                )
                # hostile text in a snippet is text: no element made of it, no script run
                search(d, "mallory", "tickets", k="5")
                wait_for("mallory's card", lambda: css(d, '#sr-results li.card[data-item-id="x"]'))
                snippet = css(d, '#sr-results li.card[data-item-id="x"] .snippet')
                assert XSS in snippet.text and snippet.find_elements("css selector", "img, script") == []
                assert [m.text for m in snippet.find_elements("css selector", "mark")] == ["tickets"]
                assert d.execute_script("return window.__xss === undefined")
                assert page_errors(d) == []
    finally:
        api.stop()
