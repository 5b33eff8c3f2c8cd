"""Media decoding and transfer for the GPU worker: PyAV (no ffmpeg binary), Pillow, urllib3.

Every failure caused by the input raises a domain error from `shared.errors`:
`MediaError` (cannot decode), `ForbiddenURL`, `PayloadTooLarge`, `FetchError` (with `retryable`).
"""

from shared.media.audio import decode_audio
from shared.media.fetch import HTTPStatusError, check_ip_allowed, download, temp_workdir, upload
from shared.media.image import decode_image, load_image, open_image
from shared.media.video import MediaInfo, VideoFrames, probe, sample_frames, target_timestamps

__all__ = [
    "HTTPStatusError",
    "MediaInfo",
    "VideoFrames",
    "check_ip_allowed",
    "decode_audio",
    "decode_image",
    "download",
    "load_image",
    "open_image",
    "probe",
    "sample_frames",
    "target_timestamps",
    "temp_workdir",
    "upload",
]
