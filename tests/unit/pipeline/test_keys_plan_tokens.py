"""Pure pieces of the orchestration: S3 keys, the delta rule, webhook tokens."""

from __future__ import annotations

import time

import pytest

from shared import spec
from shared.pipeline import keys, plan, tokens
from shared.pipeline.keys import InvalidKey

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("uploads%2Fo%2Fi%2Fmy+file+%281%29%2B%C3%BC.mp4", "uploads/o/i/my file (1)+ü.mp4"),  # moto
        ("uploads/o/i/my+file+%281%29%2B%C3%BC.mp4", "uploads/o/i/my file (1)+ü.mp4"),  # S3
        ("uploads/o/i/a%2Bb.mp4", "uploads/o/i/a+b.mp4"),
    ],
)
def test_event_keys_are_url_decoded(raw: str, key: str) -> None:
    assert keys.decode_event_key(raw) == key


@pytest.mark.parametrize(
    ("key", "kind", "role", "modality"),
    [
        ("uploads/o/i/clip.MP4", "upload", "media", "video"),
        ("uploads/o/i/memo.m4a", "upload", "media", "audio"),
        ("uploads/o/i/photo.jpeg", "upload", "media", "image"),
        ("uploads/o/i/meta.json", "upload", "meta", None),
        ("persons/o/p/face.png", "person", "media", "image"),
    ],
)
def test_parse_key(key: str, kind: str, role: str, modality: str | None) -> None:
    ref = keys.parse_key(key)
    assert (ref.kind, ref.role, ref.modality, ref.owner_id) == (kind, role, modality, "o")


@pytest.mark.parametrize(
    "key",
    [
        "uploads/o/../x.mp4",
        "uploads/../o/i/x.mp4",
        "uploads/o/i/..",
        "uploads/o/i/.env",
        "uploads/o/i/",
        "uploads/o/i",
        "uploads/o/i/a/b.mp4",
        "uploads/o w/i/x.mp4",
        "uploads/o/i\\x/x.mp4",
        "uploads/o/i/x\x00.mp4",
        "uploads/" + "o" * 65 + "/i/x.mp4",
        "downloads/o/i/x.mp4",
        "uploads/o/i/x.exe",
        "persons/o/p/voice.wav",
        "uploads/o/i/" + "x" * 300 + ".mp4",
        "uploads/o/i/a\ud800b.mp4",
    ],
)
def test_bad_keys_are_refused_without_echoing_them(key: str) -> None:
    with pytest.raises(InvalidKey) as e:
        keys.parse_key(key)
    assert not e.value.retryable
    assert key not in e.value.public_message


def test_thumbnail_keys_sit_beside_the_spec_versions_artifacts() -> None:
    assert keys.thumbnail_key("2026-11-23-abcd1234", "scenes", "own", "it", 3) == (
        "thumbnails/2026-11-23-abcd1234/scenes/own/it/3.jpg"
    )


def test_bad_event_keys() -> None:
    for raw in (None, "", 5, "x" * 4000):
        with pytest.raises(InvalidKey):
            keys.decode_event_key(raw)


def inputs(modality: str | None, media: bool = True, meta: bool = False) -> plan.ItemInputs:
    return plan.ItemInputs(modality, "m1" if media else None, "t1" if meta else None)


def test_applicable_channels_follow_the_spec() -> None:
    enabled = spec.CHANNELS
    assert plan.applicable(inputs("video"), enabled) == (
        "video_clip",
        "video_mae",
        "audio_wav2vec2",
        "transcript",
        "text_transcript",
        "scenes",
        "scene_text",
        "video_qwen3vl",
    )
    assert set(plan.applicable(inputs("video", meta=True), enabled)) == {
        "video_clip",
        "video_mae",
        "audio_wav2vec2",
        "transcript",
        "text_transcript",
        "video_qwen3vl",
        "scenes",
        "scene_text",
        "text_meta",
        "text_fused",
    }
    assert plan.applicable(inputs("image", meta=True), enabled) == ("text_meta", "image_clip")
    assert plan.applicable(inputs(None, media=False, meta=True), enabled) == ("text_meta",)
    assert plan.applicable(inputs("audio"), ["audio_wav2vec2"]) == ("audio_wav2vec2",)
    order = plan.applicable(inputs("video", meta=True), enabled)
    assert order.index("text_fused") > max(order.index("text_meta"), order.index("text_transcript"))


def test_input_hashes_are_per_input() -> None:
    chans = plan.applicable(inputs("video", meta=True), spec.CHANNELS)
    a = plan.input_hashes(plan.ItemInputs("video", "m1", "t1"), chans)
    b = plan.input_hashes(plan.ItemInputs("video", "m1", "t2"), chans)
    assert a["video_clip"] == b["video_clip"] and a["text_transcript"] == b["text_transcript"]
    assert a["text_meta"] != b["text_meta"] and a["text_fused"] != b["text_fused"]


def test_a_dependency_recipe_change_reaches_its_derived_channels(monkeypatch) -> None:
    import dataclasses
    from types import MappingProxyType

    chans = plan.applicable(inputs("video", meta=True), spec.CHANNELS)
    before = plan.input_hashes(plan.ItemInputs("video", "m1", "t1"), chans)
    meta = spec.CHANNELS["text_meta"]
    changed = dataclasses.replace(
        meta, preprocessing=MappingProxyType({**meta.preprocessing, "max_tokens": 128})
    )
    monkeypatch.setattr(spec, "CHANNELS", MappingProxyType({**spec.CHANNELS, "text_meta": changed}))
    after = plan.input_hashes(plan.ItemInputs("video", "m1", "t1"), chans)
    assert after["text_fused"] != before["text_fused"]  # text_fused re-runs on text_meta's new recipe
    assert after["text_transcript"] == before["text_transcript"] and after["text_meta"] == before["text_meta"]


def row(status: str, h: str = "m1", fp: str | None = None, **extra: str) -> dict:
    return {
        "status": status,
        "input_hash": h,
        "fingerprint": fp or spec.CHANNELS["video_clip"].fingerprint,
        "spec_version": spec.SPEC_VERSION,
        **extra,
    }


@pytest.mark.parametrize(
    ("r", "force", "run", "reason"),
    [
        (None, False, True, "new"),
        (row("SUCCEEDED"), False, False, "current"),
        (row("SUCCEEDED", h="old"), False, True, "source_changed"),
        (row("SUCCEEDED", fp="0" * 16), False, True, "fingerprint_changed"),
        (row("SUCCEEDED"), True, True, "forced"),
        (row("DISPATCHED"), True, False, "in_flight"),
        (row("DISPATCHED", h="old"), False, True, "source_changed"),
        (row("FAILED"), False, False, "failed"),
        (row("QUARANTINED"), False, False, "failed"),
        (row("FAILED"), True, True, "forced"),
        (row("PENDING"), False, True, "retry"),
        # a final result of an older spec version with an unchanged recipe is carried, not re-run
        (row("SUCCEEDED", spec_version="2020-01-01-00000000"), False, False, "carry"),
        (row("FAILED", spec_version="2020-01-01-00000000"), False, False, "carry"),
        (row("SUCCEEDED", spec_version="2020-01-01-00000000"), True, True, "forced"),
        # forced by a reprocess run: once per run (a redelivered message makes no second job)
        (row("SUCCEEDED", run_id="r-1"), "r-1", False, "current"),
        (row("SUCCEEDED", run_id="r-0"), "r-1", True, "forced"),
        # a Lambda channel that failed only because its dependency did runs once that is fixed
        (row("FAILED", error={"code": "dependency_failed"}), False, True, "failed_earlier"),
    ],
)
def test_delta_rule(r, force: bool | str, run: bool, reason: str) -> None:
    d = plan.decide("video_clip", r, "m1", force=force)
    assert (d.run, d.reason) == (run, reason)


KEY = b"k" * 32


def test_token_round_trip_and_binding() -> None:
    t = tokens.sign(KEY, "own", "item", "d" * 32, int(time.time()) + 60)
    c = tokens.verify(KEY, t, time.time())
    assert (c.owner_id, c.item_id, c.dispatch_id) == ("own", "item", "d" * 32)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: "x" + t,
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: (
            t.split(".")[0] + "." + tokens.sign(b"other", "own", "item", "d" * 32, 10**10).split(".")[1]
        ),
    ],
)
def test_tampered_tokens_are_refused(mutate) -> None:
    t = tokens.sign(KEY, "own", "item", "d" * 32, int(time.time()) + 60)
    with pytest.raises(tokens.BadToken):
        tokens.verify(KEY, mutate(t), time.time())


@pytest.mark.parametrize("expires", range(10**9, 10**9 + 8))
def test_every_other_spelling_of_the_macs_last_character_is_refused(expires: int) -> None:
    """A 32-byte MAC is 43 base64 characters; the last one carries two unused bits, so three other
    characters decode to the same bytes. The CI run that caught this changed the last character at
    random and passed about one time in 16. Only the spelling sign() writes is valid."""
    t = tokens.sign(KEY, "own", "item", "d" * 32, expires)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = 0
    for ch in alphabet.replace(t[-1], ""):
        forged = t[:-1] + ch
        same_bytes += tokens._unb64(forged.split(".")[1]) == tokens._unb64(t.split(".")[1])
        with pytest.raises(tokens.BadToken):
            tokens.verify(KEY, forged, 0)
    assert same_bytes == 3
    assert tokens.verify(KEY, t, 0).expires == expires


def test_expired_and_non_string_tokens_are_refused() -> None:
    t = tokens.sign(KEY, "own", "item", "d" * 32, int(time.time()) - 1)
    with pytest.raises(tokens.BadToken, match="expired"):
        tokens.verify(KEY, t, time.time())
    for bad in (None, 5, ["x"], {"a": 1}, "", "." * 3):
        with pytest.raises(tokens.BadToken):
            tokens.verify(KEY, bad, time.time())


def test_a_signed_claim_with_ids_outside_the_pattern_is_refused() -> None:
    t = tokens.sign(KEY, "../etc", "item", "d" * 32, int(time.time()) + 60)
    with pytest.raises(tokens.BadToken):
        tokens.verify(KEY, t, time.time())


@pytest.mark.parametrize(
    ("r", "run"),
    [
        (row("QUARANTINED"), True),  # gave up on retryable faults: a reprocess tries again
        (row("FAILED", error={"code": "worker_error", "retryable": True}), True),
        (row("FAILED", error={"code": "media_error", "retryable": False}), False),  # the input's fault
        (row("SUCCEEDED"), False),
    ],
)
def test_reprocess_retries_what_failed_retryably(r, run: bool) -> None:
    assert plan.decide("video_clip", r, "m1", retry_failed=True).run is run
