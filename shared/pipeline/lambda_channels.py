"""The channels the orchestration computes itself, in the Lambda (`runs_on: lambda` in the spec), one
object each: what it reads and how it computes its vector (or, for a per-row channel, its [1 + n, dims]
matrix). Adding one is a class here and a spec entry; the planner, the ledger and the manifests learn
of it from the spec. (person_query, rebuilt from a person's photos by the sweeper, lives in
shared.pipeline.persons.)

Each reads through a `Reader` that bounds every object by a setting and keeps what one call already
read (one transcript GET serves text_transcript and scene_text; text_meta's and text_transcript's
fresh vectors serve text_fused without a second GET). `Reader.rows` are the item's channel rows as the
ledger holds them (scene_text reads the scenes row's spans there, not from an artifact).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from shared import spec
from shared.errors import InvalidInput
from shared.pipeline import keys
from shared.pipeline.core import artifact_key, json_object
from shared.pipeline.job_output import MAX_ARTIFACT_BYTES
from shared.pipeline.settings import PipelineSettings
from shared.search.rows import check_spans, scene_texts
from shared.text import channels as text_channels
from shared.vectors import check_vector, load_npy

if TYPE_CHECKING:  # the S3 adapter is injected; the pipeline never imports shared.aws
    from shared.aws.storage import Storage


@dataclass
class Reader:
    """One item's objects as a Lambda channel reads them: bounded, each fetched once per call."""

    storage: Storage
    settings: PipelineSettings
    owner_id: str
    item_id: str
    item: Mapping[str, Any]
    cache: dict[str, bytes]
    rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def get(self, key: str, max_bytes: int, what: str) -> bytes:
        if key not in self.cache:
            data = self.storage.get(key, max_bytes)
            if data is None:
                raise InvalidInput(f"the {what} object is gone", field=what)
            self.cache[key] = data
        return self.cache[key]

    def artifact(self, channel: str, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
        return self.get(artifact_key(channel, self.owner_id, self.item_id), max_bytes, channel)


class TextMeta:
    name: ClassVar[str] = "text_meta"

    def compute(self, model: Any, read: Reader) -> np.ndarray:
        key = read.item.get("meta_key") or keys.meta_key(read.owner_id, read.item_id)
        raw = read.get(key, read.settings.max_meta_bytes, "meta.json")
        return text_channels.embed_text_meta(model, json_object(raw, "meta.json"))


class TextTranscript:
    name: ClassVar[str] = "text_transcript"

    def compute(self, model: Any, read: Reader) -> np.ndarray:
        raw = read.artifact("transcript", read.settings.max_transcript_bytes)
        return text_channels.embed_text_transcript(model, json_object(raw, "transcript"))


class TextFused:
    name: ClassVar[str] = "text_fused"

    def compute(self, model: Any, read: Reader) -> np.ndarray:
        parts = []
        for dep in spec.CHANNELS[self.name].depends_on:
            vec = load_npy(read.artifact(dep), dep)
            parts.append(check_vector(vec, spec.CHANNELS[dep].dims, dep))
        return text_channels.fuse(*parts)


class SceneText:
    """[1 + n, dims]: row i (1..n) MiniLM of the transcript's words inside scene i's span (the scenes
    row's `spans`, one per scenes artifact row, at most the spec's max_scenes: checked before any text
    is read), "" for a scene without words; row 0 the mean of the scenes with words (or of "" when none
    has any), renormalised. One embed call for every scene."""

    name: ClassVar[str] = "scene_text"

    def compute(self, model: Any, read: Reader) -> np.ndarray:
        scenes = read.rows.get("scenes") or {}
        if scenes.get("spans") is None:
            raise InvalidInput("the scenes result keeps no scene spans", field="scenes")
        spans = check_spans(scenes["spans"], spec.CHANNELS["scenes"].thumbnails)
        if not spans:
            raise InvalidInput("the video has no scenes", field="scenes")
        raw = read.artifact("transcript", read.settings.max_transcript_bytes)
        texts = scene_texts(json_object(raw, "transcript").get("segments"), spans)
        vectors = np.asarray(model.embed(texts), dtype=np.float32)
        dims = spec.CHANNELS[self.name].dims
        if vectors.shape != (len(texts), dims):
            raise InvalidInput(f"the text model returned a wrong shape (want [n, {dims}])", field=self.name)
        worded = [i for i, t in enumerate(texts) if t]
        pooled = vectors[worded].mean(axis=0) if worded else vectors[0]  # no words at all: MiniLM("")
        return np.vstack([pooled / max(float(np.linalg.norm(pooled)), 1e-12), vectors])


RUNNERS = {c.name: c() for c in (TextMeta, TextTranscript, TextFused, SceneText)}


def runner(channel: str) -> TextMeta | TextTranscript | TextFused | SceneText:
    try:
        return RUNNERS[channel]
    except KeyError:
        raise InvalidInput(f"{channel} does not run in this function") from None
