"""parse_job: every task's good shape and every bad shape, with the field path in the error."""

from __future__ import annotations

import base64
import copy

import pytest

from shared import spec
from shared.errors import InvalidInput, PayloadTooLarge
from shared.worker.requests import (
    CHANNELS_BY_MODALITY,
    ClipImageRequest,
    ClipTextRequest,
    EmbedItemRequest,
    TranscribeRequest,
    parse_job,
)
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

SECRET = "X-Amz-Signature=deadbeefSECRET"
URL = f"https://bucket.s3.amazonaws.com/uploads/o/i/v.mp4?{SECRET}"
PUT = f"https://bucket.s3.amazonaws.com/embeddings/x.npy?{SECRET}"


def embed_item(**over):
    job = {
        "task": "embed_item",
        "item": {"owner_id": "owner_1", "item_id": "item-1", "modality": "video"},
        "source_url": URL,
        "channels": ["video_clip", "video_mae", "audio_wav2vec2", "transcript"],
        "outputs": {c: PUT for c in ("video_clip", "video_mae", "audio_wav2vec2", "transcript")},
    }
    job.update(over)
    return job


GOOD = [
    (embed_item(), EmbedItemRequest),
    (
        embed_item(
            item={"owner_id": "o", "item_id": "i", "modality": "audio"},
            channels=["transcript"],
            outputs={"transcript": PUT},
            fingerprints={"transcript": spec.CHANNELS["transcript"].fingerprint},
        ),
        EmbedItemRequest,
    ),
    (
        embed_item(
            item={"owner_id": "o", "item_id": "i", "modality": "image"},
            channels=["image_clip"],
            outputs={"image_clip": PUT},
        ),
        EmbedItemRequest,
    ),
    ({"task": "transcribe", "source_url": URL}, TranscribeRequest),
    (
        {
            "task": "transcribe",
            "source_url": URL,
            "language": "en",
            "vad": False,
            "word_timestamps": True,
            "beam_size": 1,
        },
        TranscribeRequest,
    ),
    ({"task": "clip_text", "texts": ["a dog", "a cat"]}, ClipTextRequest),
    (
        {"task": "clip_image", "images": [{"url": URL}, {"base64": base64.b64encode(b"png").decode()}]},
        ClipImageRequest,
    ),
    (
        {"task": "clip_image", "images": [{"base64": "data:image/png;base64,cG5n"}], "tta": False},
        ClipImageRequest,
    ),
]


@pytest.mark.parametrize(("job", "cls"), GOOD, ids=[f"{j['task']}-{i}" for i, (j, _) in enumerate(GOOD)])
def test_good_jobs_parse_to_their_type(job, cls):
    before = copy.deepcopy(job)
    req = parse_job(job)
    assert type(req) is cls
    assert req.task == job["task"]
    assert job == before  # the parser never mutates its input


def test_parsed_values_are_kept_byte_exact():
    req = parse_job(embed_item())
    assert req.source_url == URL  # a presigned URL must not be re-encoded
    assert req.outputs["video_clip"] == PUT
    assert req.item.owner_id == "owner_1"


def test_base64_image_is_decoded_once_at_parse(monkeypatch):
    import shared.worker.requests as requests

    calls = []
    decode = requests._decode_b64
    monkeypatch.setattr(
        requests, "_decode_b64", lambda text, limit: calls.append(text) or decode(text, limit)
    )
    req = parse_job({"task": "clip_image", "images": [{"base64": "data:image/png;base64,cG5n"}]})
    assert req.images[0].data() == b"png" and req.images[0].data() is req.images[0].data()
    assert len(calls) == 1  # the parser's check is the decode: the job never decodes it again
    assert "cG5n" not in repr(req) and "png" not in repr(req.images[0])


def _item_with(modality, channels):
    return embed_item(
        item={"owner_id": "o", "item_id": "i", "modality": modality},
        channels=channels,
        outputs={c: PUT for c in channels},
    )


BAD = [
    ("not-a-dict", None, "input"),
    ("list", [], "input"),
    ("no task", {"texts": ["a"]}, "input.task"),
    ("unknown task", {"task": "embed_everything"}, "input.task"),
    ("task not a string", {"task": 3}, "input.task"),
    ("extra top-level field", {**embed_item(), "bucket": "b"}, "input.*"),
    (
        "extra item field",
        embed_item(item={"owner_id": "o", "item_id": "i", "modality": "video", "x": 1}),
        "input.item.*",
    ),
    (
        "owner id with slash",
        embed_item(item={"owner_id": "a/b", "item_id": "i", "modality": "video"}),
        "input.item.owner_id",
    ),
    (
        "owner id too long",
        embed_item(item={"owner_id": "a" * 65, "item_id": "i", "modality": "video"}),
        "input.item.owner_id",
    ),
    (
        "empty item id",
        embed_item(item={"owner_id": "o", "item_id": "", "modality": "video"}),
        "input.item.item_id",
    ),
    (
        "item id dots",
        embed_item(item={"owner_id": "o", "item_id": "../x", "modality": "video"}),
        "input.item.item_id",
    ),
    (
        "bad modality",
        embed_item(item={"owner_id": "o", "item_id": "i", "modality": "text"}),
        "input.item.modality",
    ),
    ("missing item", {k: v for k, v in embed_item().items() if k != "item"}, "input.item"),
    ("ftp source", embed_item(source_url="ftp://host/x.mp4"), "input.source_url"),
    ("file source", embed_item(source_url="file:///etc/passwd"), "input.source_url"),
    ("relative source", embed_item(source_url="/uploads/x.mp4"), "input.source_url"),
    ("source with space", embed_item(source_url="https://h/a b"), "input.source_url"),
    ("source not a string", embed_item(source_url=["https://h/x"]), "input.source_url"),
    ("no channels", embed_item(channels=[], outputs={}), "input.channels"),
    ("lambda channel", _item_with("video", ["text_meta"]), "input.channels[0]"),
    ("image channel on video", _item_with("video", ["video_clip", "image_clip"]), "input.channels[1]"),
    ("video channel on audio", _item_with("audio", ["transcript", "video_mae"]), "input.channels[1]"),
    ("audio channel on image", _item_with("image", ["transcript"]), "input.channels[0]"),
    (
        "duplicate channel",
        embed_item(channels=["video_clip", "video_clip"], outputs={"video_clip": PUT}),
        "input.channels[1]",
    ),
    (
        "missing output",
        embed_item(channels=["video_clip", "transcript"], outputs={"video_clip": PUT}),
        "input.outputs.transcript",
    ),
    (
        "extra output",
        embed_item(channels=["video_clip"], outputs={"video_clip": PUT, "video_mae": PUT}),
        "input.outputs.video_mae",
    ),
    (
        "output not http",
        embed_item(channels=["video_clip"], outputs={"video_clip": "s3://b/k"}),
        "input.outputs.video_clip",
    ),
    ("outputs a list", embed_item(channels=["video_clip"], outputs=[PUT]), "input.outputs"),
    (
        "fingerprint for another channel",
        embed_item(channels=["video_clip"], outputs={"video_clip": PUT}, fingerprints={"video_mae": "abc"}),
        "input.fingerprints.video_mae",
    ),
    (
        "transcribe beam as string",
        {"task": "transcribe", "source_url": URL, "beam_size": "5"},
        "input.beam_size",
    ),
    (
        "transcribe beam as bool",
        {"task": "transcribe", "source_url": URL, "beam_size": True},
        "input.beam_size",
    ),
    ("transcribe beam zero", {"task": "transcribe", "source_url": URL, "beam_size": 0}, "input.beam_size"),
    ("transcribe beam huge", {"task": "transcribe", "source_url": URL, "beam_size": 50}, "input.beam_size"),
    ("transcribe vad as int", {"task": "transcribe", "source_url": URL, "vad": 1}, "input.vad"),
    (
        "transcribe language name",
        {"task": "transcribe", "source_url": URL, "language": "English"},
        "input.language",
    ),
    ("transcribe no url", {"task": "transcribe"}, "input.source_url"),
    ("clip_text no texts", {"task": "clip_text", "texts": []}, "input.texts"),
    ("clip_text a string", {"task": "clip_text", "texts": "a dog"}, "input.texts"),
    ("clip_text empty text", {"task": "clip_text", "texts": ["ok", "  "]}, "input.texts[1]"),
    ("clip_text number", {"task": "clip_text", "texts": ["ok", 7]}, "input.texts[1]"),
    ("clip_text too many", {"task": "clip_text", "texts": ["a"] * 257}, "input.texts"),
    ("clip_text too long", {"task": "clip_text", "texts": ["a" * 2001]}, "input.texts[0]"),
    ("clip_image none", {"task": "clip_image", "images": []}, "input.images"),
    (
        "clip_image both",
        {"task": "clip_image", "images": [{"url": URL, "base64": "cG5n"}]},
        "input.images[0]",
    ),
    ("clip_image neither", {"task": "clip_image", "images": [{}]}, "input.images[0]"),
    ("clip_image bad b64", {"task": "clip_image", "images": [{"base64": "***"}]}, "input.images[0].base64"),
    ("clip_image empty b64", {"task": "clip_image", "images": [{"base64": ""}]}, "input.images[0].base64"),
    ("clip_image gopher", {"task": "clip_image", "images": [{"url": "gopher://h/x"}]}, "input.images[0].url"),
    ("clip_image too many", {"task": "clip_image", "images": [{"url": URL}] * 33}, "input.images"),
    ("clip_image tta string", {"task": "clip_image", "images": [{"url": URL}], "tta": "yes"}, "input.tta"),
]


@pytest.mark.parametrize(("job", "field"), [(j, f) for _, j, f in BAD], ids=[n for n, _, _ in BAD])
def test_bad_jobs_raise_invalid_input_naming_the_field(job, field):
    with pytest.raises(InvalidInput) as info:
        parse_job(job)
    err = info.value
    assert err.field == field
    assert err.public_message.startswith(f"{field}: ")
    assert err.retryable is False
    assert "SECRET" not in err.public_message  # never echoes a presigned URL
    assert "Traceback" not in err.public_message


def test_oversized_base64_image_is_payload_too_large():
    big = base64.b64encode(b"x" * 2000).decode()
    with pytest.raises(PayloadTooLarge) as info:
        parse_job(
            {"task": "clip_image", "images": [{"url": URL}, {"base64": big}]},
            WorkerSettings(max_image_bytes=1000),
        )
    assert info.value.field == "input.images[1].base64"
    assert info.value.status == 413
    assert "1000 bytes" in info.value.public_message


def test_limits_come_from_settings():
    settings = WorkerSettings.from_env({"MAX_TEXTS": "2", "MAX_IMAGES": "1"}, cuda_available=lambda: False)
    with pytest.raises(InvalidInput, match="at most 2 texts"):
        parse_job({"task": "clip_text", "texts": ["a", "b", "c"]}, settings)
    assert parse_job({"task": "clip_text", "texts": ["a", "b"]}, settings).texts == ["a", "b"]
    with pytest.raises(InvalidInput, match="at most 1 images"):
        parse_job({"task": "clip_image", "images": [{"url": URL}] * 2}, settings)


def test_channel_table_follows_the_spec():
    assert CHANNELS_BY_MODALITY["video"] == (
        "video_clip",
        "video_mae",
        "audio_wav2vec2",
        "transcript",
        "scenes",
        "video_qwen3vl",
    )
    assert CHANNELS_BY_MODALITY["audio"] == ("audio_wav2vec2", "transcript")
    assert CHANNELS_BY_MODALITY["image"] == ("image_clip",)
    every = {c for chans in CHANNELS_BY_MODALITY.values() for c in chans}
    assert every == set(spec.RUNPOD_CHANNELS)


def test_parsed_requests_are_immutable():
    req = parse_job({"task": "clip_text", "texts": ["a"]})
    with pytest.raises(ValueError):
        req.texts = ["b"]


def nested(depth: int) -> object:
    value: object = "CANARY_leaf"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = [
    ("task nested 960 deep", {"task": nested(960)}),
    ("texts nested 960 deep", {"task": "clip_text", "texts": nested(960)}),
    ("a dict nested 50 deep", {"task": "clip_text", "texts": ["a"], "x": {"k": nested(50)}}),
    ("huge int task", {"task": 10**5000}),
    ("huge int beam", {"task": "transcribe", "source_url": URL, "beam_size": 10**5000}),
    ("negative huge int", {"task": "clip_text", "texts": ["a"], "n": -(2**64)}),
    ("too many values", {"task": "clip_text", "texts": ["CANARY_text"] * 10_000}),
    ("non-string key", {"task": "clip_text", "texts": ["a"], 7: "CANARY_value"}),
    ("not JSON", {"task": "clip_text", "texts": [object()]}),
    ("canary task", {"task": "CANARY_task"}),
    ("canary key", {"task": "clip_text", "texts": ["a"], "CANARY_key": 1}),
    (
        "canary item key",
        embed_item(item={"owner_id": "o", "item_id": "i", "modality": "video", "CANARY_k": 1}),
    ),
    ("canary channel", _item_with("video", ["CANARY_channel"])),
    (
        "canary output key",
        embed_item(channels=["video_clip"], outputs={"video_clip": PUT, "CANARY_out": PUT}),
    ),
    (
        "canary fingerprint key",
        embed_item(channels=["video_clip"], outputs={"video_clip": PUT}, fingerprints={"CANARY_fp": "x"}),
    ),
    ("canary modality", embed_item(item={"owner_id": "o", "item_id": "i", "modality": "CANARY_mod"})),
    ("canary owner", embed_item(item={"owner_id": "CANARY/own", "item_id": "i", "modality": "video"})),
    ("canary url", embed_item(source_url="ftp://CANARY_host/x")),
    ("canary language", {"task": "transcribe", "source_url": URL, "language": "CANARY"}),
]


@pytest.mark.parametrize("job", [j for _, j in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_hostile_input_is_refused_without_repeating_it(job):
    with pytest.raises(InvalidInput) as info:
        parse_job(job)
    err = info.value
    assert err.code == "invalid_input" and err.retryable is False
    text = err.public_message
    assert "CANARY" not in text and "Traceback" not in text and "0000000000" not in text
    assert len(text) < 300


def test_input_at_the_depth_limit_still_parses():
    # input.images[0].url is the deepest legal shape; extra depth inside a known field is refused by type
    assert parse_job({"task": "clip_image", "images": [{"url": URL}]}).images[0].url == URL
