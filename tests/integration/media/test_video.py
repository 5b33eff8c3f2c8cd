"""Frame sampling and probing on real encoded files (PyAV, tiny synthetic videos)."""

import bisect
import contextlib
from pathlib import Path

import av
import numpy as np
import pytest

from shared.dev.media import (
    SyntheticVideo,
    make_audio,
    make_video,
    marker_corner,
    read_frame_index,
    truncated,
)
from shared.errors import MediaError
from shared.media import probe, sample_frames, target_timestamps

pytestmark = pytest.mark.integration


def expected_indices(frame_times: list[float], targets: np.ndarray) -> list[int]:
    """Reference rule: the first frame with pts >= target, or the last frame past the end."""
    return [min(bisect.bisect_left(frame_times, t - 1e-9), len(frame_times) - 1) for t in targets]


def check_exact(video: SyntheticVideo, n: int) -> None:
    got = sample_frames(video.path, n)
    assert got.mode == "seek" and got.padded == 0
    assert got.frames.shape == (n, video.height, video.width, 3) and got.frames.dtype == np.uint8
    np.testing.assert_allclose(got.target_timestamps, target_timestamps(got.duration, n))
    indices = [read_frame_index(f) for f in got.frames]
    want = expected_indices(video.frame_times, got.target_timestamps)
    assert indices == want
    np.testing.assert_allclose(got.timestamps, [video.frame_times[i] for i in want], atol=1e-3)
    gaps = np.diff([0.0, *video.frame_times])
    for i, ts, target in zip(want, got.timestamps, got.target_timestamps, strict=True):
        assert abs(ts - target) <= max(gaps[i], gaps[min(i + 1, len(gaps) - 1)]) + 1e-6


@pytest.mark.parametrize("n", [1, 4, 16, 32])
def test_cfr_sampling_hits_the_first_frame_at_or_after_each_target(cfr_mp4: SyntheticVideo, n: int) -> None:
    check_exact(cfr_mp4, n)


@pytest.mark.parametrize("n", [4, 16])
def test_bframes(bframes_mp4: SyntheticVideo, n: int) -> None:
    check_exact(bframes_mp4, n)


@pytest.mark.parametrize("n", [4, 16])
def test_variable_frame_rate_uses_pts_not_index(vfr_mp4: SyntheticVideo, n: int) -> None:
    assert len(set(np.round(np.diff(vfr_mp4.frame_times), 3))) == 3  # the fixture really is VFR
    check_exact(vfr_mp4, n)


@pytest.mark.parametrize("n", [4, 16])
def test_webm_vp9(vp9_webm: SyntheticVideo, n: int) -> None:
    check_exact(vp9_webm, n)


def test_seeks_instead_of_decoding_everything(cfr_mp4: SyntheticVideo) -> None:
    got = sample_frames(cfr_mp4.path, 4)
    # targets 0.5, 1.5, 2.5, 3.5 s, keyframes every 1 s: 4 seeks, 6 frames decoded each
    assert got.seeks == 4
    assert got.decoded == 24 < len(cfr_mp4.frame_times)


def test_one_long_gop_decodes_forward_without_seeking_back(one_gop_mp4: SyntheticVideo) -> None:
    got = sample_frames(one_gop_mp4.path, 8)
    assert got.seeks == 1
    assert got.decoded <= len(one_gop_mp4.frame_times)
    assert [read_frame_index(f) for f in got.frames] == expected_indices(
        one_gop_mp4.frame_times, got.target_timestamps
    )


@pytest.mark.parametrize(("rotation", "corner"), [(90, "bl"), (180, "br"), (270, "tr")])
def test_rotation_metadata_is_applied(media_dir: Path, rotation: int, corner: str) -> None:
    video = make_video(media_dir / f"rot{rotation}.mp4", seconds=1, fps=10, size=(64, 48), rotation=rotation)
    info = probe(video.path)
    assert info.rotation == rotation
    expected_hw = (64, 48) if rotation in (90, 270) else (48, 64)
    assert (info.height, info.width) == expected_hw
    got = sample_frames(video.path, 4)
    assert got.rotation == rotation
    assert got.frames.shape[1:3] == expected_hw
    # the red marker was drawn top-left on the coded frame; np.rot90 is counter-clockwise
    assert all(marker_corner(f) == corner for f in got.frames)
    upright = [np.rot90(f, k=-rotation // 90) for f in got.frames]
    assert [read_frame_index(f) for f in upright] == expected_indices(
        video.frame_times, got.target_timestamps
    )


def test_unrotated_marker_stays_top_left(cfr_mp4: SyntheticVideo) -> None:
    got = sample_frames(cfr_mp4.path, 2)
    assert got.rotation == 0
    assert all(marker_corner(f) == "tl" for f in got.frames)


def test_max_side_downscales_keeping_aspect(media_dir: Path) -> None:
    video = make_video(media_dir / "big.mp4", seconds=1, fps=5, size=(320, 240))
    got = sample_frames(video.path, 3, max_side=80)
    assert got.frames.shape == (3, 60, 80, 3)
    assert [read_frame_index(f) for f in got.frames] == expected_indices(
        video.frame_times, got.target_timestamps
    )
    assert sample_frames(video.path, 1, max_side=1000).frames.shape == (1, 240, 320, 3)


def test_short_clip_is_padded_with_the_last_frame(short_mp4: SyntheticVideo) -> None:
    got = sample_frames(short_mp4.path, 16)
    assert got.mode == "sequential"
    assert got.padded == 11
    assert [read_frame_index(f) for f in got.frames] == [0, 1, 2, 3, 4] + [4] * 11
    np.testing.assert_allclose(got.timestamps, short_mp4.frame_times + [short_mp4.frame_times[-1]] * 11)
    assert got.frames.shape == (16, 48, 64, 3)


def test_unknown_duration_takes_the_first_frames(media_dir: Path) -> None:
    # A raw H.264 elementary stream has neither a duration nor a frame count.
    src = make_video(media_dir / "raw-src.mkv", seconds=2, fps=10)
    raw = media_dir / "raw.h264"
    with av.open(str(src.path)) as inp, av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    assert probe(raw).duration is None
    got = sample_frames(raw, 6)
    assert got.mode == "sequential" and got.padded == 0
    assert [read_frame_index(f) for f in got.frames] == [0, 1, 2, 3, 4, 5]
    assert np.all(np.diff(got.timestamps) > 0)


def test_probe_reports_streams_and_codecs(
    cfr_mp4: SyntheticVideo, vp9_webm: SyntheticVideo, tone_wav: Path
) -> None:
    info = probe(cfr_mp4.path)
    assert (info.has_video, info.has_audio, info.video_codec, info.audio_codec) == (True, True, "h264", "aac")
    assert (info.width, info.height, info.rotation, info.frame_count) == (64, 48, 0, 40)
    assert info.duration == pytest.approx(4.0, abs=0.05) and info.fps == pytest.approx(10.0)
    webm = probe(vp9_webm.path)
    assert (webm.video_codec, webm.audio_codec) == ("vp9", "opus")
    assert webm.duration == pytest.approx(3.0, abs=0.1)
    audio = probe(tone_wav)
    assert (audio.has_video, audio.has_audio, audio.width, audio.audio_codec) == (
        False,
        True,
        None,
        "pcm_s16le",
    )
    assert audio.duration == pytest.approx(2.0, abs=0.01)


def test_no_video_stream(tone_wav: Path) -> None:
    with pytest.raises(MediaError, match="no video stream"):
        sample_frames(tone_wav)


def test_zero_byte_file(media_dir: Path) -> None:
    empty = media_dir / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        probe(empty)
    with pytest.raises(MediaError, match="empty"):
        sample_frames(empty)


def test_not_media(media_dir: Path) -> None:
    junk = media_dir / "junk.mp4"
    junk.write_bytes(b"<html>not a video</html>" * 50)
    with pytest.raises(MediaError, match="not a readable media file"):
        probe(junk)
    with pytest.raises(MediaError, match="not a readable media file"):
        sample_frames(junk)
    with pytest.raises(MediaError) as err:
        probe(junk)
    assert str(media_dir) not in err.value.public_message


def test_truncated_mp4_without_its_index_is_refused(cfr_mp4: SyntheticVideo, media_dir: Path) -> None:
    # moov (the index) is written last by default: cutting the file loses it.
    cut = truncated(cfr_mp4.path, 0.6, dest=media_dir / "cut.mp4")
    with pytest.raises(MediaError):
        probe(cut)
    with pytest.raises(MediaError):
        sample_frames(cut)


def test_truncated_faststart_mp4_samples_what_exists(media_dir: Path) -> None:
    video = make_video(media_dir / "fs.mp4", seconds=4, fps=10, gop=10, faststart=True)
    cut = truncated(video.path, 0.7, dest=media_dir / "fs-cut.mp4")
    decodable = []
    with av.open(str(cut)) as c:
        for packet in c.demux(video=0):
            with contextlib.suppress(av.error.InvalidDataError):  # the cut packet
                decodable += [f.time for f in packet.decode()]
    assert 1.0 < max(decodable) < 3.5
    got = sample_frames(cut, 4)
    assert got.duration == pytest.approx(max(decodable) + 0.1)
    assert got.mode == "seek" and got.padded == 0
    assert [read_frame_index(f) for f in got.frames] == expected_indices(
        video.frame_times, got.target_timestamps
    )


def test_audio_only_container_has_no_video(media_dir: Path) -> None:
    m4a = make_audio(media_dir / "a.m4a", 1.0)
    assert probe(m4a).has_video is False
    with pytest.raises(MediaError, match="no video stream"):
        sample_frames(m4a, 2)
