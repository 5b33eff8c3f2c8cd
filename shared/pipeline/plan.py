"""Which channels an item needs, and which of them must run now (seed 004's delta rule).

An item is one folder `uploads/{owner}/{item}/`: at most one media source (the latest upload wins)
and an optional `meta.json`. The channels that apply follow from the spec: a channel applies when its
modality is one the item has (a video has "video" and its audio track "audio"; every item may have
"text") and every channel it depends on applies. Where a channel's input comes from is also read off
the spec: RunPod channels read the media, a Lambda channel with no dependency reads meta.json
(text_meta), and a derived channel reads its dependencies' outputs.

Each channel row records the hash of its own inputs (`input_hash`) and the channel's fingerprint. A
channel runs when it has no SUCCEEDED row for its current input hash and fingerprint, or when forced;
a row that is DISPATCHED, FAILED (not retryable) or QUARANTINED for the same inputs does not run
again by itself (a duplicate S3 event must never start a second GPU job), only when forced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared import spec

PENDING, DISPATCHED, SUCCEEDED, FAILED, QUARANTINED = (
    "PENDING",
    "DISPATCHED",
    "SUCCEEDED",
    "FAILED",
    "QUARANTINED",
)
CHANNEL_STATUSES = (PENDING, DISPATCHED, SUCCEEDED, FAILED, QUARANTINED)
TERMINAL = (SUCCEEDED, FAILED, QUARANTINED)
DEPENDENCY_FAILED = "dependency_failed"

ITEM_MODALITIES = {
    "video": ("video", "audio", "text"),
    "audio": ("audio", "text"),
    "image": ("image", "text"),
    None: ("text",),  # meta.json only, so far
}


def hash_of(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def source_hash(key: str, etag: str, size: int) -> str:
    """What identifies one version of an object: its key, ETag and size."""
    return hash_of(key, etag.strip('"'), str(size))


def input_kind(channel: str) -> str:
    """ "media", "meta" or "derived": where a channel's input comes from (read off the spec)."""
    ch = spec.CHANNELS[channel]
    if ch.depends_on:
        return "derived"
    return "media" if ch.runs_on == spec.RUNPOD else "meta"


@dataclass(frozen=True)
class ItemInputs:
    """What an item has now: its media modality and the hashes of its media and meta.json."""

    modality: str | None
    media_hash: str | None
    meta_hash: str | None


def inputs(item: Mapping[str, Any] | None) -> ItemInputs:
    """What an item row says the item has now."""
    item = item or {}
    return ItemInputs(item.get("modality") or None, item.get("media_hash"), item.get("meta_hash"))


def upstream(channel: str) -> set[str]:
    """Every channel a channel depends on, directly or through others."""
    out: set[str] = set()
    todo = list(spec.CHANNELS[channel].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in out:
            out.add(dep)
            todo.extend(spec.CHANNELS[dep].depends_on)
    return out


def applicable(inputs: ItemInputs, enabled: Iterable[str]) -> tuple[str, ...]:
    """The enabled channels that apply to an item, in spec order (dependencies before dependents)."""
    modalities = ITEM_MODALITIES.get(inputs.modality, ())
    enabled = set(enabled)
    out: list[str] = []
    for name, ch in spec.CHANNELS.items():
        if name not in enabled or ch.modality not in modalities:
            continue
        kind = input_kind(name)
        if kind == "media" and inputs.media_hash is None:
            continue
        if kind == "meta" and inputs.meta_hash is None:
            continue
        if kind == "derived" and not all(dep in out for dep in ch.depends_on):
            continue
        out.append(name)
    return _ordered(out)


def _ordered(names: list[str]) -> tuple[str, ...]:
    """Spec order, except that every channel comes after what it depends on."""
    done: list[str] = []

    def visit(n: str) -> None:
        if n in done:
            return
        for dep in spec.CHANNELS[n].depends_on:
            if dep in names:
                visit(dep)
        done.append(n)

    for n in names:
        visit(n)
    return tuple(done)


def input_hashes(inputs: ItemInputs, channels: Iterable[str]) -> dict[str, str]:
    """channel -> hash of exactly the inputs it reads (a derived channel: its dependencies' input hashes
    and fingerprints)."""
    out: dict[str, str] = {}
    for name in _ordered(list(channels)):
        kind = input_kind(name)
        if kind == "media":
            out[name] = inputs.media_hash or ""
        elif kind == "meta":
            out[name] = inputs.meta_hash or ""
        else:
            # a dependency's recipe is part of a derived channel's input: a new text_meta model re-runs
            # text_fused too, even though no source changed
            deps = spec.CHANNELS[name].depends_on
            out[name] = hash_of(name, *(f"{out.get(d, '')}:{spec.CHANNELS[d].fingerprint}" for d in deps))
    return out


def current(row: Mapping[str, Any] | None, channel: str, input_hash: str | None) -> bool:
    """The row holds a final result (SUCCEEDED, FAILED or QUARANTINED) for the channel's current inputs
    (`input_hash`) and recipe (its fingerprint)."""
    return bool(
        row
        and row.get("status") in TERMINAL
        and row.get("input_hash") == input_hash
        and row.get("fingerprint") == spec.CHANNELS[channel].fingerprint
    )


# what decide() reads of a channel row, and what ItemInputs are built from (an item row): a reader that
# only plans may fetch just these (tests/integration/pipeline/test_reprocess.py,
# test_planning_from_the_fetched_fields_equals_planning_from_whole_rows, holds them to it)
ROW_FIELDS = ("status", "input_hash", "fingerprint", "run_id", "error", "spec_version")
INPUT_FIELDS = ("modality", "media_hash", "meta_hash")


@dataclass(frozen=True)
class Decision:
    channel: str
    run: bool
    # run: new | source_changed | fingerprint_changed | retry | forced | failed_earlier
    # not run: current | in_flight | failed | carry (a final result of an older spec version whose
    # recipe did not change: its artifact is copied beside the new version's, no model runs)
    reason: str


def decide(
    channel: str,
    row: Mapping[str, Any] | None,
    input_hash: str,
    *,
    force: bool | str = False,
    retry_failed: bool = False,
) -> Decision:
    """The delta rule for one channel row. `force`: True, or the id of the reprocess run that forces it
    (a row that run already forced is not forced again: a redelivered message makes no second job).
    `retry_failed`: QUARANTINED rows, and FAILED rows whose error was retryable, run again (a reprocess
    retries what failed earlier; a non-retryable failure of the same inputs and recipe stays final)."""
    fp = spec.CHANNELS[channel].fingerprint
    if row is None or "status" not in row:
        return Decision(channel, True, "new")
    same_inputs = row.get("input_hash") == input_hash
    same_fp = row.get("fingerprint") == fp
    status = row.get("status")
    if status == DISPATCHED and same_inputs and same_fp:
        return Decision(channel, False, "in_flight")
    if force and not (isinstance(force, str) and row.get("run_id") == force):
        return Decision(channel, True, "forced")
    if not same_inputs:
        return Decision(channel, True, "source_changed")
    if not same_fp:
        return Decision(channel, True, "fingerprint_changed")
    error = row.get("error") if isinstance(row.get("error"), dict) else {}
    if status in (FAILED, QUARANTINED) and (
        (retry_failed and (status == QUARANTINED or error.get("retryable")))
        or error.get("code") == DEPENDENCY_FAILED
    ):
        # a reprocess retries what gave up on a retryable fault (quarantined); a failure the input itself
        # caused (corrupt media) is final for these inputs and recipe, so asking again makes no new GPU
        # job; a Lambda channel that failed only because a dependency did runs once that is fixed
        return Decision(channel, True, "failed_earlier")
    if status in (SUCCEEDED, FAILED, QUARANTINED) and row.get("spec_version") != spec.SPEC_VERSION:
        return Decision(channel, False, "carry")
    if status == SUCCEEDED:
        return Decision(channel, False, "current")
    if status in (FAILED, QUARANTINED):
        return Decision(channel, False, "failed")
    return Decision(channel, True, "retry")  # PENDING: a retryable failure waiting for its retry


def needed(
    inputs: ItemInputs,
    rows: Mapping[str, Mapping[str, Any]],
    enabled: Iterable[str],
    *,
    force: bool | str = False,
    retry_failed: bool = False,
) -> list[Decision]:
    """One decision per applicable channel."""
    chans = applicable(inputs, enabled)
    hashes = input_hashes(inputs, chans)
    return [decide(c, rows.get(c), hashes[c], force=force, retry_failed=retry_failed) for c in chans]
