"""The scenes channel through embed_item (fake CLIP, real PyAV decode and PySceneDetect, no sockets):
one thumbnail JPEG PUT per scene before the artifact, the result's spans, and the request's contract
for thumbnail URLs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.dev.media import make_shot_video
from shared.worker.requests import MAX_THUMBNAILS
from tests.unit.worker.harness import Harness, embed_job, url

pytestmark = pytest.mark.unit

ENV = {"WORKER_CHANNELS": "video_clip,scenes"}


def thumbs() -> list[str]:
    return [url(f"thumb-{i}.jpg") for i in range(MAX_THUMBNAILS)]


def test_scenes_puts_one_thumbnail_per_scene_and_reports_spans(tmp_path, temp_root):
    video = make_shot_video(tmp_path / "s.mp4", [("pan", 20), ("static", 20), ("pan", 20)], fps=10)
    h = Harness({"s.mp4": video.video.path}, ENV)
    out = h.run(embed_job("s.mp4", "video", ["video_clip", "scenes"], thumbnails=thumbs()))
    sc = out["channels"]["scenes"]
    assert sc["status"] == "succeeded", sc
    assert [(s["start"], s["end"]) for s in sc["scenes"]] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert sc["timestamps"] == [s["keyframe"] for s in sc["scenes"]] and sc["shape"] == [4, 512]
    rows = np.load(io.BytesIO(h.uploads["scenes.out"][0]))
    assert rows.shape == (4, 512)
    put = sorted(n for n in h.uploads if n.startswith("thumb-"))
    assert put == ["thumb-0.jpg", "thumb-1.jpg", "thumb-2.jpg"]
    data, ctype = h.uploads["thumb-1.jpg"]
    assert ctype == "image/jpeg" and Image.open(io.BytesIO(data)).size == (64, 48)


def test_a_failed_thumbnail_put_fails_the_channel_without_its_artifact(tmp_path, temp_root):
    video = make_shot_video(tmp_path / "s.mp4", [("pan", 20), ("pan", 20)], fps=10)
    h = Harness({"s.mp4": video.video.path}, ENV)
    h.fail_upload.add("thumb-1.jpg")
    out = h.run(embed_job("s.mp4", "video", ["video_clip", "scenes"], thumbnails=thumbs()))
    assert out["channels"]["scenes"]["status"] == "failed"
    assert out["channels"]["video_clip"]["status"] == "succeeded"
    assert "scenes.out" not in h.uploads


@pytest.mark.parametrize(
    ("channels", "thumbnails"),
    [(["scenes"], None), (["scenes"], thumbs()[:3]), (["video_clip"], thumbs()), (["scenes"], thumbs() * 2)],
)
def test_thumbnail_urls_are_exactly_max_scenes_with_scenes_and_none_without(
    media, temp_root, channels, thumbnails
):
    h = Harness(media, ENV)
    extra = {} if thumbnails is None else {"thumbnails": thumbnails}
    out = h.run(embed_job("clip.mp4", "video", channels, **extra))
    assert out["error"]["code"] == "invalid_input" and out["error"]["field"] == "input.thumbnails"
    assert h.downloads == []
