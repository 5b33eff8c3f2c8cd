"""Pure rules of the frame sampler: targets, rotation normalisation, when to seek."""

import numpy as np
import pytest

from shared.media.video import _normalize_rotation, _should_seek, target_timestamps

pytestmark = pytest.mark.unit


def test_targets_are_slice_centres() -> None:
    t = target_timestamps(10.0, 4)
    assert t.dtype == np.float64
    np.testing.assert_allclose(t, [1.25, 3.75, 6.25, 8.75])
    np.testing.assert_allclose(target_timestamps(3.0, 1), [1.5])
    t16 = target_timestamps(7.3, 16)
    assert np.all(np.diff(t16) > 0) and t16[0] > 0 and t16[-1] < 7.3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0, 0), (90, 90), (-90, 270), (180, 180), (-180, 180), (270, 270), (89.6, 90), (360, 0)],
)
def test_rotation_is_a_quarter_turn_ccw(raw: float, expected: int) -> None:
    assert _normalize_rotation(raw) == expected


def test_seek_only_when_a_keyframe_lies_ahead_with_a_complete_index() -> None:
    keyframes = [0, 100, 200]
    # first target always seeks
    assert _should_seek(None, 50, keyframes, True, 40)
    # same GOP: decode forward
    assert not _should_seek(60, 90, keyframes, True, 40)
    # next GOP: seek
    assert _should_seek(60, 150, keyframes, True, 40)
    # one huge GOP with a complete index: never seek back to it
    assert not _should_seek(60, 10_000, [0], True, 40)


def test_sparse_index_falls_back_to_distance() -> None:
    # cues end at 100; far targets beyond them seek, near ones decode forward
    assert _should_seek(110, 500, [0, 100], False, 40)
    assert not _should_seek(110, 130, [0, 100], False, 40)
    assert _should_seek(10, 500, [], False, 40)
    assert not _should_seek(10, 45, [], False, 40)
