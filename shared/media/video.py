"""Video probing and uniform frame sampling with PyAV.

Sampling is by timestamp with seeking, never by decoding the whole file: for each target t the
container seeks to the keyframe at or before t and decodes forward to the first frame whose
pts >= t. A target whose keyframe is not ahead of the current decode position (same GOP) is
reached by decoding forward, without a backwards seek. Timestamps come from pts * time_base, so
variable frame rate is handled; rotation metadata (display matrix) is applied so frames are upright.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np

from shared.errors import MediaError
from shared.media._av import decode_error, open_input

# Without a keyframe index, a target further ahead than this is reached by seeking, not decoding.
_SEEK_AHEAD_S = 2.0
_MAX_BAD_PACKETS = 8


@dataclass(frozen=True)
class MediaInfo:
    """What a container holds. width/height are display dimensions (after rotation)."""

    has_video: bool
    has_audio: bool
    duration: float | None  # seconds; None when neither the stream nor the container knows it
    width: int | None
    height: int | None
    rotation: int  # degrees counter-clockwise applied for display: 0, 90, 180 or 270
    fps: float | None  # average frame rate; None when unknown
    video_codec: str | None
    audio_codec: str | None
    frame_count: int | None  # from the container header; None when unknown


@dataclass(frozen=True)
class VideoFrames:
    """Frames sampled from a video, upright, RGB.

    frames: uint8 [n, H, W, 3]. timestamps: float64 [n], pts in seconds from the stream start of
    each returned frame. target_timestamps: float64 [n], the uniform targets (in "sequential" mode
    there are none, and this equals `timestamps`). padded: how many trailing frames repeat the last
    decoded frame because the clip had fewer decodable frames than requested.
    mode: "seek" (uniform by timestamp) or "sequential" (duration unknown, or fewer frames than
    requested: the first decodable frames in order, then padding). seeks/decoded: the work done.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    target_timestamps: np.ndarray
    duration: float | None
    rotation: int
    padded: int
    mode: str
    seeks: int = 0  # container seeks performed
    decoded: int = 0  # frames decoded in total (the cost)


def target_timestamps(duration: float, num_frames: int) -> np.ndarray:
    """Uniform targets t_i = (i + 0.5) * duration / n, i = 0..n-1: each is the centre of its 1/n slice."""
    return (np.arange(num_frames, dtype=np.float64) + 0.5) * (duration / num_frames)


def _normalize_rotation(degrees: float) -> int:
    return (round(degrees / 90) * 90) % 360


def _rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Counter-clockwise degrees to rotate the coded frame for display."""
    if frame.rotation:
        return _normalize_rotation(frame.rotation)
    tag = stream.metadata.get("rotate")  # legacy tag, clockwise
    if tag:
        try:
            return _normalize_rotation(-float(tag))
        except ValueError:
            return 0
    return 0


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _fps(stream: av.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def check_frame_size(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a video whose coded frames are larger than `max_pixels` (MediaError)."""
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(f"video frames are {width}x{height}, limit {max_pixels} pixels per frame")


def probe(path: Path | str, *, max_pixels: int | None = None) -> MediaInfo:
    """Read stream metadata, decoding one video frame to learn the rotation and prove it decodes.

    `max_pixels` bounds the coded frame size, checked from the stream header before anything is
    decoded (and again on the first frame, for streams whose header does not say).
    Raises MediaError for zero-byte, truncated, corrupt or non-media files, for files with
    neither a video nor an audio stream, and for frames over `max_pixels`.
    """
    with open_input(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError("no audio or video stream")
        if video is not None:
            check_frame_size(video.codec_context.width, video.codec_context.height, max_pixels)
        rotation = 0
        width = height = None
        duration = fps = None
        frame_count = None
        if video is not None:
            first = next(_decode(container, video), None)
            if first is None:
                raise MediaError("the video stream has no decodable frames")
            check_frame_size(first.width, first.height, max_pixels)
            rotation = _rotation(first, video)
            width, height = first.width, first.height
            if rotation in (90, 270):
                width, height = height, width
            duration = _stream_duration(container, video)
            fps = _fps(video)
            frame_count = video.frames or None
        elif container.duration:
            duration = container.duration / av.time_base
        if duration is None and audio is not None and audio.duration and audio.time_base:
            duration = float(audio.duration * audio.time_base)
        return MediaInfo(
            has_video=video is not None,
            has_audio=audio is not None,
            duration=duration,
            width=width,
            height=height,
            rotation=rotation,
            fps=fps,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            frame_count=frame_count,
        )


def _decode(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Decode forward from the current position (frames of raw streams may have no pts).

    A packet the decoder rejects (a cut last packet, a damaged one mid-stream) is skipped; more than
    _MAX_BAD_PACKETS in a row means the stream is broken.
    """
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as e:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    raise decode_error("the video stream", e) from e
                continue
            bad = 0
            yield from frames
    except av.FFmpegError as e:
        raise decode_error("the video stream", e) from e


class _Converter:
    """Frame -> upright RGB uint8, downscaled so the longer side is at most max_side."""

    def __init__(self, max_side: int | None) -> None:
        self.max_side = max_side
        self.rotation: int | None = None

    def __call__(self, frame: av.VideoFrame, stream: av.VideoStream) -> np.ndarray:
        if self.rotation is None:
            self.rotation = _rotation(frame, stream)
        width, height = frame.width, frame.height
        if self.max_side and max(width, height) > self.max_side:
            scale = self.max_side / max(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        if (width, height) == (frame.width, frame.height):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        if self.rotation:
            rgb = np.rot90(rgb, k=self.rotation // 90)
        return np.ascontiguousarray(rgb)


def sample_frames(
    path: Path | str, num_frames: int = 16, *, max_side: int | None = None, max_pixels: int | None = None
) -> VideoFrames:
    """Return `num_frames` frames sampled uniformly by timestamp, upright and RGB.

    Targets are `target_timestamps(duration, num_frames)`; each returned frame is the first with
    pts >= its target, so it lies within one frame period of the target. If the stream ends before
    the header's duration (a truncated file, or a container duration that counts a longer audio
    track), the targets are recomputed once over the frames that do exist. When the duration is
    unknown or the clip has fewer frames than requested (header frame count, else duration * average
    fps), the first `num_frames` decodable frames are taken in order and the last one is repeated.

    max_side: downscale (aspect kept) so the longer side is at most this many pixels: each frame is
    converted straight from the decoder to that size, so only the decoder's own frame is full size.
    max_pixels: refuse (MediaError) coded frames larger than this, from the stream header.
    Raises MediaError when the file has no video stream or nothing decodes.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    with open_input(path) as container:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        check_frame_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
        stream.codec_context.thread_type = "AUTO"
        duration = _stream_duration(container, stream)
        fps = _fps(stream)
        estimated = stream.frames or (round(duration * fps) if duration and fps else None)
        sampler = _Sampler(container, stream, _Converter(max_side))
        targets: np.ndarray | None = None
        if duration and duration > 0 and estimated is not None and estimated >= num_frames:
            period = 1 / fps if fps else duration / estimated
            targets = target_timestamps(duration, num_frames)
            picked = sampler.seek_pass(targets, period)
            if len(picked) < num_frames and sampler.last_time is not None:
                # Ended early: find the real end, then retarget over what is there.
                sampler.scan_to_end(sampler.last_time)
                duration = sampler.last_time + period
                if duration / period >= num_frames:
                    targets = target_timestamps(duration, num_frames)
                    picked = sampler.seek_pass(targets, period)
                else:
                    targets = None
            if not picked:
                targets = None  # seeking produced nothing: read from the start instead
        if targets is None:
            picked = sampler.sequential(num_frames, fps)
        if not picked:
            raise MediaError("the video stream has no decodable frames")
        padded = num_frames - len(picked)
        picked.extend([picked[-1]] * padded)
        timestamps = np.array([t for t, _ in picked], dtype=np.float64)
        return VideoFrames(
            frames=np.stack([img for _, img in picked]),
            timestamps=timestamps,
            target_timestamps=targets if targets is not None else timestamps.copy(),
            duration=duration,
            rotation=sampler.convert.rotation or 0,
            padded=padded,
            mode="seek" if targets is not None else "sequential",
            seeks=sampler.seeks,
            decoded=sampler.decoded,
        )


class _Sampler:
    """Decode state over one open container: counts seeks and decoded frames for diagnostics."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, convert: _Converter):
        self.container, self.stream, self.convert = container, stream, convert
        self.start: int = stream.start_time or 0
        self.seeks = 0
        self.decoded = 0
        self.last_time: float | None = None  # seconds of the latest-pts frame decoded so far
        self.seek_gains_nothing = False

    def _seek(self, pts: int) -> Iterator[av.VideoFrame]:
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self.seeks += 1
        return self._frames()

    def _frames(self, *, with_pts: bool = True) -> Iterator[av.VideoFrame]:
        for frame in _decode(self.container, self.stream):
            self.decoded += 1
            if frame.pts is None:
                if not with_pts:
                    yield frame
                continue
            t = self._time(frame)
            if self.last_time is None or t > self.last_time:
                self.last_time = t
            yield frame

    def _time(self, frame: av.VideoFrame) -> float:
        return float((frame.pts - self.start) * frame.time_base)

    def _entry(self, frame: av.VideoFrame) -> tuple[float, np.ndarray]:
        return self._time(frame), self.convert(frame, self.stream)

    def scan_to_end(self, from_time: float) -> None:
        """Decode from `from_time` to the end of the data, only to learn the last pts."""
        for _ in self._seek(int(self.start + from_time / self.stream.time_base)):
            pass

    def sequential(self, n: int, fps: float | None) -> list[tuple[float, np.ndarray]]:
        """The first n decodable frames from the start. A frame without a pts (raw elementary
        streams) gets index / fps, or its index when the rate is unknown."""
        if self.seeks:
            self.container.seek(self.start, stream=self.stream, backward=True)
            self.seeks += 1
        picked: list[tuple[float, np.ndarray]] = []
        for frame in self._frames(with_pts=False):
            if frame.pts is None:
                picked.append(
                    (len(picked) / fps if fps else float(len(picked)), self.convert(frame, self.stream))
                )
            else:
                picked.append(self._entry(frame))
            if len(picked) == n:
                break
        return picked

    def seek_pass(self, targets: np.ndarray, period: float) -> list[tuple[float, np.ndarray]]:
        """One pass over ascending targets, seeking only when the target's keyframe is ahead of us.

        A target after the last frame takes the last frame if it is within one `period` (seconds) of
        it; otherwise the pass stops there and returns fewer entries than targets. A frame hit by
        several targets is converted once.
        """
        tb: Fraction = self.stream.time_base
        entries = self.stream.index_entries
        keyframes = sorted(e.timestamp for e in entries if e.is_keyframe)
        # mp4/mov index every sample: then the keyframe list is complete and authoritative.
        complete = bool(keyframes) and 0 < self.stream.frames <= len(entries)
        ahead = _SEEK_AHEAD_S / tb
        frames: Iterator[av.VideoFrame] | None = None
        current: av.VideoFrame | None = None
        entry: tuple[float, np.ndarray] | None = None
        picked: list[tuple[float, np.ndarray]] = []
        for t in targets:
            target_pts = self.start + t / tb
            if current is not None and current.pts >= target_pts:
                picked.append(entry)  # several targets inside one frame period
                continue
            before = current.pts if current is not None else None
            seeked = frames is None or (
                not self.seek_gains_nothing and _should_seek(before, target_pts, keyframes, complete, ahead)
            )
            if seeked:
                frames = self._seek(int(target_pts))
            reached = False
            for frame in frames:
                if seeked:
                    seeked = False
                    if before is not None and frame.pts <= before:
                        # The seek went back into decoded territory (no keyframe index, one long GOP):
                        # from now on decode forward only.
                        self.seek_gains_nothing = True
                current, entry = frame, None
                if frame.pts >= target_pts:
                    reached = True
                    break
            if current is None:
                break
            if entry is None:
                entry = self._entry(current)
            if not reached and t - entry[0] > period * 1.01:
                break
            picked.append(entry)
        return picked


def _should_seek(
    current_pts: int | None, target_pts: float, keyframes: list[int], complete: bool, ahead: float
) -> bool:
    """Seek when a keyframe lies between us and the target; past the end of a sparse index (mkv cues
    are often one per cluster, live webm has none) when the target is more than `ahead` away."""
    if current_pts is None:
        return True
    if complete or (keyframes and target_pts <= keyframes[-1] + ahead):
        i = bisect.bisect_right(keyframes, target_pts) - 1
        return i >= 0 and keyframes[i] > current_pts
    return target_pts - current_pts > ahead
