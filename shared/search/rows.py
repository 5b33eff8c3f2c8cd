"""Rows from the pipeline's artifacts, as pure functions (no I/O, no model: the text embedder is injected).

What each channel's artifact becomes (DESIGN.md, S3 keys; shapes from shared/worker/channels):

    transcript    JSON {"segments": [{"start", "end", "text"}], "duration", ...} -> transcript windows
                  (segments merged into ~10-30 s overlapping windows), each embedded with MiniLM
    video_clip    .npy [1 + n, 512], row 0 the pooled video vector -> one item row (pooled) + n frames
    scenes        .npy [1 + n, 512], rows 1..n the scenes' keyframes -> n visual scene rows, each spanning
                  its scene (the ledger's `spans`), its thumbnail at `scene_thumbnail_key`, its text the
                  scene's words (with a transcript); frames stay for refining the moment inside a scene
    scene_text    .npy [1 + n, 384], rows aligned with scenes' -> a text scene row per scene with words
                  (`scene_texts`: the transcript's words inside its span, recomputed here for BM25), same
                  span and thumbnail
    image_clip    .npy [512] -> one image row
    text_meta     .npy [384] + meta.json's title/description/query -> one item row with that text
    person_query  .npy [512] -> one person row (item_id "@{person_id}")

Frame timestamps: the artifact holds none; the worker reports them (video_clip's result metadata
`timestamps`) and the pipeline keeps them, validated, on the channel's ledger row (shared.pipeline.
job_output, results), whence `frame_timestamps` (shared.search.indexer). Without them (a row written
before they were kept) they are derived the way the worker samples in its "seek" mode: uniform targets
t_i = (i + 0.5) * duration / n (shared.media.video.target_timestamps), which needs the item's duration;
with neither, only the pooled item row is made.

Every count is bounded by SearchSettings: windows per item, frames per item, characters of text.
Channels with no query-side encoder (video_mae, audio_wav2vec2, text_transcript, text_fused,
video_qwen3vl) are not indexed: `INDEXED_CHANNELS` says which are.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared import spec
from shared.errors import InvalidInput
from shared.pipeline.keys import ID_RE, person_item_id, thumbnail_key
from shared.search.engine import (
    FRAME,
    IMAGE,
    ITEM,
    PERSON,
    PERSONS,
    SCENE,
    SPACES,
    TEXT,
    TRANSCRIPT_WINDOW,
    VISUAL,
    Row,
)
from shared.search.settings import DEFAULTS, SearchSettings

Embed = Callable[[list[str]], np.ndarray]  # texts -> float32 [n, dims], unit rows

# channel -> the table its rows go to. The index learns nothing else about channels.
INDEXED_CHANNELS: dict[str, str] = {
    "transcript": TEXT,
    "text_meta": TEXT,
    "video_clip": VISUAL,
    "image_clip": VISUAL,
    "person_query": PERSONS,
    "scenes": VISUAL,
    "scene_text": TEXT,
}
META_FIELDS = ("title", "description", "query")


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    text: str


@dataclass
class ItemArtifacts:
    """What the pipeline has of one item (any subset). Vectors as loaded from their .npy artifacts."""

    transcript: Mapping[str, Any] | None = None  # the transcript JSON document
    video_clip: np.ndarray | None = None  # [1 + n, 512]
    frame_timestamps: Sequence[float] | None = None  # the worker's `timestamps`, when kept
    duration_s: float | None = None  # the media's duration, when known
    scenes: np.ndarray | None = None  # [1 + n, 512]
    scene_spans: Sequence[Sequence[float]] | None = None  # [start, end] per scene row, as the ledger keeps
    scene_text: np.ndarray | None = None  # [1 + n, 384], rows aligned with the scenes'
    image_clip: np.ndarray | None = None  # [512]
    text_meta: np.ndarray | None = None  # [384]
    meta: Mapping[str, Any] | None = None  # meta.json: title, description, query


@dataclass
class ItemRows:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was left out, and why (no values echoed)


def check_ids(owner_id: str, item_id: str) -> None:
    for name, value in (("owner_id", owner_id), ("item_id", item_id)):
        if not isinstance(value, str) or not ID_RE.fullmatch(value):
            raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field=name)


def cut_text(text: str, limit: int) -> str:
    """Whitespace collapsed, cut to at most `limit` characters at a word boundary when there is one."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def clean_segments(segments: Any) -> list[Window]:
    """The transcript's segments as (start, end, text), sorted, with bad ones dropped (no text, no
    finite times, end before start)."""
    out: list[Window] = []
    if not isinstance(segments, list):
        return out
    for seg in segments:
        if not isinstance(seg, Mapping):
            continue
        start, end, text = _finite(seg.get("start")), _finite(seg.get("end")), seg.get("text")
        if start is None or end is None or not isinstance(text, str) or not text.strip():
            continue
        start = max(0.0, start)
        if end < start:
            continue
        out.append(Window(start, end, " ".join(text.split())))
    out.sort(key=lambda w: (w.start_s, w.end_s))
    return out


def transcript_windows(segments: Any, settings: SearchSettings = DEFAULTS) -> list[Window]:
    """Segments merged into windows of about window_target_s (at most window_max_s), overlapping by about
    window_overlap_s, at most max_windows_per_item, text cut to max_text_chars.

    A window takes segments in order while it spans less than window_target_s and the next segment
    keeps it within window_max_s (a single longer segment is a window of its own). The next window
    starts at the first segment starting at or after `end - window_overlap_s` (always at least one
    segment later, so it ends). Times are the segments' own: a window never splits a segment."""
    segs = clean_segments(segments)
    windows: list[Window] = []
    i = 0
    while i < len(segs) and len(windows) < settings.max_windows_per_item:
        j = i + 1
        start, end = segs[i].start_s, segs[i].end_s
        while j < len(segs) and end - start < settings.window_target_s:
            nxt_end = max(end, segs[j].end_s)
            if nxt_end - start > settings.window_max_s:
                break
            end = nxt_end
            j += 1
        text = cut_text(" ".join(s.text for s in segs[i:j]), settings.max_text_chars)
        windows.append(Window(start, end, text))
        if j >= len(segs):
            break
        nxt = j
        back = end - settings.window_overlap_s
        for m in range(i + 1, j):
            if segs[m].start_s >= back:
                nxt = m
                break
        i = nxt
    return windows


def check_spans(spans: Any, limit: int) -> list[tuple[float, float]]:
    """A scenes row's `spans` ([start, end] seconds per scene row, as the ledger keeps them) as pairs:
    at most `limit` of them (counted before any is read), each finite with 0 <= start <= end, in time
    order."""
    if not isinstance(spans, list | tuple):
        raise InvalidInput("must be a list of [start, end] pairs", field="scene_spans")
    if len(spans) > limit:
        raise InvalidInput(f"holds more than {limit} scenes", field="scene_spans")
    pairs = []
    for span in spans:
        ok = isinstance(span, list | tuple) and len(span) == 2
        start, end = (_finite(span[0]), _finite(span[1])) if ok else (None, None)
        if start is None or end is None or start < 0 or end < start:
            raise InvalidInput("must hold one finite [start, end] per scene row", field="scene_spans")
        if pairs and start < pairs[-1][0]:
            raise InvalidInput("must be in time order", field="scene_spans")
        pairs.append((start, end))
    return pairs


def scene_texts(segments: Any, spans: Sequence[tuple[float, float]]) -> list[str]:
    """The transcript's words inside each scene's [start, end) (the last scene's end included): a word
    belongs to the scene holding its midpoint. Whisper's segments carry no word times here (the spec's
    transcript has word_timestamps off), so a segment's words share its span evenly. One text per
    scene, "" for a scene without words; the scene_text channel and the index both read this."""
    out: list[list[str]] = [[] for _ in spans]
    starts = [s for s, _ in spans]
    for seg in clean_segments(segments):
        words = seg.text.split()
        step = (seg.end_s - seg.start_s) / len(words)
        for n, word in enumerate(words):
            t = seg.start_s + (n + 0.5) * step
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0 and (t < spans[i][1] or (i == len(spans) - 1 and t <= spans[i][1])):
                out[i].append(word)
    return [" ".join(words) for words in out]


def _unit(vector: Any, dims: int, what: str) -> np.ndarray:
    arr = np.asarray(vector, dtype=np.float32)
    if arr.shape != (dims,) or not np.all(np.isfinite(arr)):
        raise InvalidInput(f"must be a finite float32 vector of {dims}", field=what)
    norm = float(np.linalg.norm(arr))
    if norm == 0.0:
        raise InvalidInput("is a zero vector", field=what)
    return arr / norm


def transcript_rows(
    owner_id: str,
    item_id: str,
    doc: Mapping[str, Any],
    embed: Embed,
    settings: SearchSettings = DEFAULTS,
) -> list[Row]:
    """One text row per transcript window, embedded in one `embed` call."""
    check_ids(owner_id, item_id)
    windows = transcript_windows(doc.get("segments"), settings)
    if not windows:
        return []
    dims = SPACES[TEXT][1]
    vectors = np.asarray(embed([w.text for w in windows]), dtype=np.float32)
    if vectors.shape != (len(windows), dims):
        raise InvalidInput(f"the text embedder returned a wrong shape (want [n, {dims}])", field="embed")
    return [
        Row(
            f"{item_id}:transcript:{n}",
            TEXT,
            TRANSCRIPT_WINDOW,
            owner_id,
            item_id,
            "transcript",
            round(w.start_s, 3),
            round(w.end_s, 3),
            w.text,
            _unit(vectors[n], dims, "embed"),
        )
        for n, w in enumerate(windows)
    ]


def uniform_timestamps(duration_s: float, n: int) -> np.ndarray:
    """The worker's uniform frame targets (shared.media.video.target_timestamps, not imported: that
    module needs PyAV, which the Lambda image does not have)."""
    return (np.arange(n, dtype=np.float64) + 0.5) * (duration_s / n)


def frame_spans(timestamps: Sequence[float], duration_s: float | None) -> list[tuple[float, float, float]]:
    """(t, start, end) per frame: each frame stands for the time up to halfway to its neighbours,
    the first from 0 (or its own half-gap), the last to the duration when known."""
    ts = [float(t) for t in timestamps]
    out = []
    for n, t in enumerate(ts):
        before = (t + ts[n - 1]) / 2 if n > 0 else (0.0 if len(ts) == 1 else max(0.0, t - (ts[1] - t) / 2))
        if n + 1 < len(ts):
            after = (t + ts[n + 1]) / 2
        elif duration_s is not None and duration_s > t:
            after = float(duration_s)
        else:
            after = t + (t - ts[n - 1]) / 2 if n > 0 else t
        out.append((t, max(0.0, before), max(after, t)))
    return out


def video_rows(
    owner_id: str,
    item_id: str,
    matrix: np.ndarray,
    *,
    timestamps: Sequence[float] | None = None,
    duration_s: float | None = None,
    settings: SearchSettings = DEFAULTS,
    notes: list[str] | None = None,
) -> list[Row]:
    """video_clip's [1 + n, 512]: row 0 -> an item row (the pooled vector, span 0..duration), rows 1..n
    -> frame rows at their timestamps (given, else uniform over `duration_s`; neither: no frame rows).
    More than max_frames_per_item frames are thinned evenly."""
    check_ids(owner_id, item_id)
    dims = SPACES[VISUAL][1]
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] != dims:
        raise InvalidInput(f"must be a [1 + frames, {dims}] matrix", field="video_clip")
    duration = _finite(duration_s)
    duration = duration if duration is not None and duration > 0 else None
    rows = [
        Row(
            f"{item_id}:video_clip:0",
            VISUAL,
            ITEM,
            owner_id,
            item_id,
            "video_clip",
            0.0,
            round(duration or 0.0, 3),
            "",
            _unit(m[0], dims, "video_clip"),
        )
    ]
    frames = m[1:]
    n = len(frames)
    if n == 0:
        return rows
    if timestamps is not None:
        ts = [_finite(t) for t in timestamps]
        if len(ts) != n or any(t is None or t < 0 for t in ts):
            raise InvalidInput("must hold one finite time per frame row", field="frame_timestamps")
        times = np.asarray(ts, dtype=np.float64)
    elif duration is not None:
        times = uniform_timestamps(duration, n)
    else:
        if notes is not None:
            notes.append("video_clip: frames left out (no timestamps and no duration)")
        return rows
    keep = np.arange(n)
    if n > settings.max_frames_per_item:
        keep = np.unique(np.linspace(0, n - 1, settings.max_frames_per_item).round().astype(int))
        if notes is not None:
            notes.append(f"video_clip: {n} frames thinned to {len(keep)}")
    spans = frame_spans(times[keep], duration)
    for (_, start, end), idx in zip(spans, keep, strict=True):
        rows.append(
            Row(
                f"{item_id}:video_clip:{idx + 1}",
                VISUAL,
                FRAME,
                owner_id,
                item_id,
                "video_clip",
                round(start, 3),
                round(end, 3),
                "",
                _unit(frames[idx], dims, "video_clip"),
            )
        )
    return rows


def scene_rows(
    owner_id: str,
    item_id: str,
    matrix: np.ndarray,
    spans: Sequence[Sequence[float]] | None,
    *,
    channel: str = "scenes",
    texts: Sequence[str] | None = None,
    settings: SearchSettings = DEFAULTS,
    notes: list[str] | None = None,
) -> list[Row]:
    """A scene-aligned channel's [1 + n, dims] (`scenes`: CLIP keyframes, visual; `scene_text`: MiniLM of
    the scene's words, text): rows 1..n -> scene rows `{item_id}:{channel}:{i}` spanning their scenes
    (row 0, pooled, is left out: the item's own rows stand for the whole video). `texts`: each scene's
    words (scene_texts), the rows' text; a text row is made only for a scene with words. Without spans,
    no rows; more than max_frames_per_item scenes are thinned evenly (the same scenes in both spaces)."""
    check_ids(owner_id, item_id)
    space = INDEXED_CHANNELS[channel]
    dims = SPACES[space][1]
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] != dims:
        raise InvalidInput(f"must be a [1 + scenes, {dims}] matrix", field=channel)
    n = len(m) - 1
    if n == 0:
        return []
    if spans is None:
        if notes is not None:
            notes.append(f"{channel}: left out (no spans kept)")
        return []
    pairs = check_spans(spans, n)
    if len(pairs) != n or (texts is not None and len(texts) != n):
        raise InvalidInput("must hold one finite [start, end] per scene row", field="scene_spans")
    keep = np.arange(n)
    if n > settings.max_frames_per_item:
        keep = np.unique(np.linspace(0, n - 1, settings.max_frames_per_item).round().astype(int))
        if notes is not None:
            notes.append(f"{channel}: {n} scenes thinned to {len(keep)}")
    rows = []
    for i in (int(k) for k in keep):
        text = cut_text(texts[i], settings.max_text_chars) if texts is not None else ""
        if space == TEXT and not text:
            continue  # a scene without words: its vector is MiniLM(""), nothing to find it by
        start, end = pairs[i]
        vector = _unit(m[i + 1], dims, channel)
        rows.append(
            Row(
                f"{item_id}:{channel}:{i + 1}",
                space,
                SCENE,
                owner_id,
                item_id,
                channel,
                round(start, 3),
                round(end, 3),
                text,
                vector,
            )
        )
    return rows


def thumbnail_channel(channel: str) -> str | None:
    """The channel whose thumbnails a scene-aligned channel's rows show: `scenes` for scenes and for a
    per-row channel that depends on it (scene_text); None for any other."""
    ch = spec.CHANNELS.get(channel)
    if ch is None or not ch.per_row:
        return None
    return next((c for c in (channel, *ch.depends_on) if spec.CHANNELS[c].thumbnails), None)


def scene_thumbnail_key(spec_version: str, owner_id: str, item_id: str, row_id: str) -> str | None:
    """The keyframe JPEG of a scene row (or hit) `{item_id}:{channel}:{i}` of a scene-aligned channel
    (scenes, scene_text) of an index of `spec_version`; None for any other row."""
    head, _, index = row_id.rpartition(":")
    item, _, channel = head.partition(":")
    thumbs = thumbnail_channel(channel) if item == item_id and index.isdigit() else None
    if thumbs is None or int(index) < 1:
        return None
    return thumbnail_key(spec_version, thumbs, owner_id, item_id, int(index) - 1)


def image_rows(owner_id: str, item_id: str, vector: np.ndarray) -> list[Row]:
    check_ids(owner_id, item_id)
    v = _unit(vector, SPACES[VISUAL][1], "image_clip")
    return [Row(f"{item_id}:image_clip:0", VISUAL, IMAGE, owner_id, item_id, "image_clip", 0.0, 0.0, "", v)]


def meta_text(meta: Mapping[str, Any] | None, settings: SearchSettings = DEFAULTS) -> str:
    """meta.json's title, description and query, joined (the fields text_meta embeds), bounded."""
    if not isinstance(meta, Mapping):
        return ""
    parts = [" ".join(str(meta[f]).split()) for f in META_FIELDS if isinstance(meta.get(f), str)]
    return cut_text(" — ".join(p for p in parts if p), settings.max_text_chars)


def meta_rows(
    owner_id: str,
    item_id: str,
    vector: np.ndarray,
    meta: Mapping[str, Any] | None,
    settings: SearchSettings = DEFAULTS,
) -> list[Row]:
    """text_meta's vector with meta.json's text (BM25 finds the title too)."""
    check_ids(owner_id, item_id)
    v = _unit(vector, SPACES[TEXT][1], "text_meta")
    text = meta_text(meta, settings)
    return [Row(f"{item_id}:text_meta:0", TEXT, ITEM, owner_id, item_id, "text_meta", 0.0, 0.0, text, v)]


def person_rows(owner_id: str, person_id: str, vector: np.ndarray) -> list[Row]:
    """A person's query vector, under its ledger id "@{person_id}" (never meets an upload's id)."""
    check_ids(owner_id, person_id)
    v = _unit(vector, SPACES[PERSONS][1], "person_query")
    pid = person_item_id(person_id)
    return [Row(f"{pid}:person_query:0", PERSONS, PERSON, owner_id, pid, "person_query", 0.0, 0.0, "", v)]


def item_rows(
    owner_id: str,
    item_id: str,
    artifacts: ItemArtifacts,
    embed: Embed,
    settings: SearchSettings = DEFAULTS,
) -> ItemRows:
    """Every row of one item from whatever artifacts it has (the writer's one call per item)."""
    check_ids(owner_id, item_id)
    out = ItemRows()
    a = artifacts
    if a.transcript is not None:
        windows = transcript_rows(owner_id, item_id, a.transcript, embed, settings)
        if len(windows) >= settings.max_windows_per_item:
            out.notes.append(f"transcript: cut to {settings.max_windows_per_item} windows")
        out.rows += windows
    duration = a.duration_s
    if duration is None and a.transcript is not None:
        duration = _finite(a.transcript.get("duration"))  # the audio transcribed: a lower bound
    if a.video_clip is not None:
        out.rows += video_rows(
            owner_id,
            item_id,
            a.video_clip,
            timestamps=a.frame_timestamps,
            duration_s=duration,
            settings=settings,
            notes=out.notes,
        )
    texts = None
    aligned = a.scenes if a.scenes is not None else a.scene_text
    if aligned is not None and a.scene_spans is not None and a.transcript is not None:
        # at most one span per scene row: checked before the transcript's words are read
        texts = scene_texts(
            a.transcript.get("segments"), check_spans(a.scene_spans, max(0, len(aligned) - 1))
        )
    for channel in ("scenes", "scene_text"):
        matrix = getattr(a, channel)
        if matrix is not None:
            out.rows += scene_rows(
                owner_id,
                item_id,
                matrix,
                a.scene_spans,
                channel=channel,
                texts=texts,
                settings=settings,
                notes=out.notes,
            )
    if a.image_clip is not None:
        out.rows += image_rows(owner_id, item_id, a.image_clip)
    if a.text_meta is not None:
        out.rows += meta_rows(owner_id, item_id, a.text_meta, a.meta, settings)
    return out


def load_transcript(data: bytes) -> dict[str, Any]:
    """A transcript artifact's bytes as its document (InvalidInput naming the channel otherwise)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("is not valid JSON", field="transcript") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list):
        raise InvalidInput("has no segments", field="transcript")
    return doc
