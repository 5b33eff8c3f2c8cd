"""The state machine on its in-memory adapters (ledger, storage, RunPod; no sockets): every path an
item can take ends settled, with a true reason. The same flows run through moto, the real handlers and
the RunPod stand-in in tests/integration/pipeline (test_no_stuck_items.py, test_faults.py)."""

from __future__ import annotations

import json
import random

import pytest

from shared.dev.fakes import FakeBackend
from shared.dev.memory_ledger import memory_ledger
from shared.dev.memory_stack import MemoryStorage, ScriptedRunPod
from shared.pipeline import tokens
from shared.pipeline.job_output import parse_result
from shared.pipeline.policy import RetryPolicy, full_jitter
from shared.pipeline.runpod_client import AmbiguousSubmit, RunPodError
from shared.pipeline.service import Pipeline
from shared.pipeline.settings import PipelineSettings

SETTLED = ("COMPLETE", "PARTIAL", "QUARANTINED")
GPU = ("video_clip", "video_mae", "audio_wav2vec2", "transcript")


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


class Machine:
    """A Pipeline over memory adapters, and what a test drives it with."""

    def __init__(self, **settings: object) -> None:
        self.clock = Clock()
        self.storage = MemoryStorage(self.clock)
        self.runpod = ScriptedRunPod(self.storage)
        self.ledger = memory_ledger(clock=self.clock)
        defaults = {
            "bucket": "b",
            "table": "t",
            "callback_url": "https://callback.example",
            "backoff_base_s": 10.0,
            "backoff_max_s": 60.0,
            "poll_after_s": 30.0,
            "poll_interval_s": 10.0,
            "manifest_delay_s": 0.0,
        }
        self.p = Pipeline(
            PipelineSettings(**{**defaults, **settings}),  # type: ignore[arg-type]
            self.ledger,
            self.storage,  # type: ignore[arg-type]
            text_model=FakeBackend(384),
            runpod=self.runpod,  # type: ignore[arg-type]
            webhook_key=b"k" * 32,
            clock=self.clock,
            rng=random.Random(0),
        )

    def upload(self, owner: str, item: str, data: bytes = b"\x00" * 64, seq: str | None = None) -> str:
        key = f"uploads/{owner}/{item}/v.mp4"
        self.storage.put(key, data)
        obj = {"key": key, "size": len(data), **({"sequencer": seq} if seq else {})}
        self.p.on_s3_record({"eventName": "ObjectCreated:Put", "s3": {"object": obj}})
        return key

    def item(self, owner: str, item: str) -> dict:
        return self.ledger.item(owner, item) or {}

    def job(self, owner: str, item: str) -> str:
        return self.item(owner, item)["job_id"]

    def webhook(self, owner: str, item: str, body: dict) -> str:
        """What on_job_done does with a valid token: the apply's action."""
        row = self.item(owner, item)
        claim = tokens.verify(
            self.p.webhook_key,
            tokens.sign(self.p.webhook_key, owner, item, row["dispatch_id"], int(self.clock() + 60)),
            self.clock(),
        )
        return self.p.apply_result(claim.owner_id, claim.item_id, claim.dispatch_id, body).action

    def sweep_until(self, done, *, step_s: float = 60.0, rounds: int = 500) -> dict[str, int]:
        seen: dict[str, int] = {}
        for n in range(rounds):
            if done():
                return {**seen, "rounds": n}
            self.clock.t += step_s
            for action, count in self.p.sweep(workers=1).items():
                seen[action] = seen.get(action, 0) + count
            for job_id in list(self.runpod.jobs):  # a job submitted meanwhile finishes, its webhook lost
                if job_id not in self.runpod.answers and self.runpod.status_error is None:
                    self.runpod.finish(job_id)
        raise AssertionError(f"not settled after {rounds} sweeps: {seen}")


@pytest.fixture
def m() -> Machine:
    return Machine()


def test_one_upload_dispatches_one_job_and_completes(m: Machine) -> None:
    m.upload("o", "a")
    m.upload("o", "a")  # a duplicate event: no second job
    assert len(m.runpod.jobs) == 1
    assert m.webhook("o", "a", m.runpod.finish(m.job("o", "a"))) == "applied"
    item, rows = m.ledger.rows("o", "a")
    assert item["status"] == "COMPLETE" and "dispatch_id" not in item
    assert {rows[c]["status"] for c in GPU} == {"SUCCEEDED"}
    assert rows["text_transcript"]["status"] == "SUCCEEDED" and item["gpu_seconds"] == 0.5


GARBLES = {
    "seconds_text": lambda b: _each(b, "seconds", "1.5"),
    "seconds_object": lambda b: _each(b, "seconds", {"a": 1}),
    "seconds_list": lambda b: _each(b, "seconds", [1]),
    "seconds_bool": lambda b: _each(b, "seconds", True),
    "bytes_negative": lambda b: _each(b, "bytes", -1),
    "no_sha": lambda b: _each(b, "sha256", None),
    "status_unknown": lambda b: _each(b, "status", "maybe"),
    "report_string": lambda b: {**b, "output": {**b["output"], "channels": dict.fromkeys(GPU, "ok")}},
    "channels_list": lambda b: {**b, "output": {**b["output"], "channels": []}},
    "output_string": lambda b: {**b, "output": "done"},
}


def _each(body: dict, field: str, value: object) -> dict:
    body = json.loads(json.dumps(body))
    for rep in body["output"]["channels"].values():
        rep[field] = value
    return body


@pytest.mark.parametrize("garble", GARBLES.values(), ids=GARBLES.keys())
def test_a_garbled_answer_is_a_retryable_bad_output_then_a_quarantine(garble) -> None:
    m = Machine(max_attempts=2)
    m.upload("o", "a")
    assert m.webhook("o", "a", garble(m.runpod.finish(m.job("o", "a")))) == "applied"
    item, rows = m.ledger.rows("o", "a")
    assert item["dispatch_state"] == "RETRY"
    assert {rows[c]["error"]["code"] for c in GPU} == {"bad_output"}
    m.clock.t += 120
    m.p.sweep()  # the retry dispatches again; its answer is garbled too
    assert m.webhook("o", "a", garble(m.runpod.finish(m.job("o", "a")))) == "applied"
    item = m.item("o", "a")
    assert item["status"] == "QUARANTINED" and "bad_output" in item["quarantine_reason"]
    assert len(m.runpod.jobs) == 2


def test_a_job_runpod_forgot_is_lost_past_its_deadline_then_dispatched_again(m: Machine) -> None:
    m.upload("o", "a")
    first = m.job("o", "a")
    del m.runpod.jobs[first]  # /status answers 404 from now on
    seen = m.sweep_until(lambda: m.item("o", "a").get("status") in SETTLED)
    assert seen["lost:retry"] == 1 and seen["poll_error"] >= 3
    assert m.item("o", "a")["status"] == "COMPLETE" and first in m.runpod.cancelled
    assert len(m.runpod.jobs) == 1  # one new job (the first was forgotten)
    # not before the deadline: a job may still run (the TTL is 3600 s, polls every 10 s here)
    assert seen["poll_error"] >= 3600 / 60 - 1


def test_an_endpoint_that_stays_down_quarantines_with_its_reason(m: Machine) -> None:
    m.upload("o", "a")
    m.runpod.status_error = m.runpod.run_error = RunPodError("cannot connect to RunPod (NewConnectionError)")
    m.sweep_until(lambda: m.item("o", "a").get("status") in SETTLED, step_s=600)
    item = m.item("o", "a")
    assert item["status"] == "QUARANTINED" and "cannot connect to RunPod" in item["quarantine_reason"]
    assert {r["status"] for r in m.ledger.rows("o", "a")[1].values()} == {"QUARANTINED"}


def test_an_unconfirmed_submit_is_quarantined_with_what_run_answered() -> None:
    m = Machine(max_attempts=2)
    m.runpod.run_error = AmbiguousSubmit("RunPod run answered HTTP 502; the job may exist")
    m.upload("o", "a")
    assert m.item("o", "a")["dispatch_state"] == "CLAIMED"
    seen = m.sweep_until(lambda: m.item("o", "a").get("status") in SETTLED, step_s=1800)
    reason = m.item("o", "a")["quarantine_reason"]
    assert "submit_unconfirmed" in reason and "HTTP 502" in reason, reason
    assert seen["claimed:retry"] == 1 and seen["claimed:quarantined"] == 1


def test_a_body_for_another_job_or_item_changes_nothing(m: Machine) -> None:
    m.upload("o", "a")
    m.upload("o", "b")
    body_b = m.runpod.finish(m.job("o", "b"))
    before = m.ledger.rows("o", "a")
    assert m.webhook("o", "a", body_b) == "stale"
    assert m.webhook("o", "a", {**body_b, "id": m.job("o", "a")}) == "stale"  # B's output, A's id
    assert m.ledger.rows("o", "a") == before


@pytest.mark.parametrize(("v1", "v2"), [("0055AED6DCD9028100", "0055AED6DCD90282"), ("0A", "0B00")])
def test_sequencers_compare_after_right_padding(m: Machine, v1: str, v2: str) -> None:
    m.upload("o", "a", b"one" * 10, seq=v1)
    etag1 = m.item("o", "a")["media_etag"]
    m.upload("o", "a", b"two!" * 10, seq=v2)
    assert m.item("o", "a")["media_etag"] != etag1
    m.upload("o", "a", b"one" * 10, seq=v1)  # the older event, late
    assert m.item("o", "a")["media_etag"] != etag1


def test_free_overdue_frees_only_a_dispatch_past_its_deadline(m: Machine) -> None:
    m.upload("o", "a")
    assert not m.p.free_overdue("o", "a")
    m.clock.t += 3601
    assert m.p.free_overdue("o", "a")
    item, rows = m.ledger.rows("o", "a")
    assert "dispatch_id" not in item and {rows[c]["status"] for c in GPU} == {"PENDING"}
    m.p.advance("o", "a", force=True)
    assert len(m.runpod.jobs) == 2


def test_the_workers_frame_times_are_kept_only_when_they_fit() -> None:
    m = Machine()
    m.upload("o", "a")
    body = m.runpod.finish(m.job("o", "a"))
    assert m.webhook("o", "a", body) == "applied"
    assert m.ledger.rows("o", "a")[1]["video_clip"]["timestamps"] == [0.125, 0.375, 0.625, 0.875]

    def report(ts):
        out = json.loads(json.dumps(body))
        out["output"]["channels"]["video_clip"]["timestamps"] = ts
        return parse_result(out, max_seconds=3600, max_frames=4).report("video_clip")

    for bad in ([1.0, 0.5, 2, 3], [0.1, float("nan"), 1, 2], [-1, 0, 1, 2], ["0", 1, 2, 3], [0, 1, 2, 3, 4]):
        assert report(bad)["code"] == "bad_output", bad
    assert report([0, 0.5, 0.5, 2]).timestamps == [0, 0.5, 0.5, 2]
    # as many times as the artifact has frame rows, or the channel's output is bad
    m2 = Machine(max_attempts=1)
    m2.upload("o", "a")
    body = m2.runpod.finish(m2.job("o", "a"))
    body["output"]["channels"]["video_clip"]["timestamps"] = [0.5, 1.5]
    m2.webhook("o", "a", body)
    row = m2.ledger.rows("o", "a")[1]["video_clip"]
    assert row["status"] != "SUCCEEDED" and "frame rows" in row["error"]["message"]


def test_full_jitter_spans_zero_to_the_capped_exponential() -> None:
    rng = random.Random(1)
    draws = [full_jitter(3, 10.0, 30.0, rng) for _ in range(2000)]
    assert 0.0 <= min(draws) < 1.0 and 29.0 < max(draws) <= 30.0  # the cap, not 10 * 2**2 = 40
    policy = RetryPolicy(4, 10.0, 30.0, 3600.0, 60.0, 3)
    assert policy.exhausted(4) and not policy.exhausted(3)
    assert policy.deadline({"dispatch_state": "SUBMITTED", "submitted_at": "2027-01-01T00:00:00.000Z"}) == (
        1798761600.0 + 3600.0
    )


def test_parsing_never_raises_on_garbage() -> None:
    rng = random.Random(7)
    huge = 10**4000  # json.loads accepts up to 4,300 digits; float() of it overflows
    atoms = [
        None,
        True,
        -1,
        1e308,
        float("inf"),
        float("nan"),
        huge,
        -huge,
        "x",
        "\ud800",
        [],
        {},
        "COMPLETED",
    ]

    def garbage(depth: int = 0) -> object:
        if depth > 3 or rng.random() < 0.3:
            return rng.choice(atoms)
        if rng.random() < 0.5:
            return [garbage(depth + 1) for _ in range(rng.randint(0, 3))]
        keys = ["status", "output", "channels", "seconds", "error", "id", "executionTime", "item", "sha256"]
        keys.append("timestamps")
        return {rng.choice(keys): garbage(depth + 1) for _ in range(rng.randint(0, 4))}

    for _ in range(3000):
        body = garbage()
        result = parse_result(body if isinstance(body, dict) else {"output": body}, max_seconds=3600)
        assert 0.0 <= result.gpu_seconds <= 3600.0


def test_a_scenes_dispatch_carries_one_thumbnail_put_per_possible_scene() -> None:
    from shared import spec
    from shared.pipeline import keys

    m = Machine(channels=("video_clip", "scenes"))
    m.upload("o", "a")
    job = m.runpod.jobs[m.job("o", "a")]["input"]
    assert job["channels"] == ["video_clip", "scenes"]
    wanted = int(spec.CHANNELS["scenes"].preprocessing["max_scenes"])
    assert job["thumbnails"] == [
        m.storage.presign_put(keys.thumbnail_key(spec.SPEC_VERSION, "scenes", "o", "a", i), 60)
        for i in range(wanted)
    ]
    m2 = Machine()  # a job without scenes carries none
    m2.upload("o", "b")
    assert "thumbnails" not in m2.runpod.jobs[m2.job("o", "b")]["input"]


def test_carried_scenes_bring_their_thumbnails_beside_the_new_version(monkeypatch) -> None:
    from shared import spec
    from shared.pipeline import keys

    m = Machine(channels=("video_clip", "scenes"))
    m.upload("o", "a")
    assert m.webhook("o", "a", m.runpod.finish(m.job("o", "a"))) == "applied"
    old = spec.SPEC_VERSION
    assert m.storage.objects.get(keys.thumbnail_key(old, "scenes", "o", "a", 3)) is not None
    monkeypatch.setattr(spec, "SPEC_VERSION", "2099-01-01-00000000")  # every recipe unchanged: all carried
    m.p.advance("o", "a")
    _, rows = m.ledger.rows("o", "a")
    assert rows["scenes"]["spec_version"] == spec.SPEC_VERSION and rows["scenes"]["carried_from"] == old
    for i in range(4):
        assert m.storage.objects[keys.thumbnail_key(spec.SPEC_VERSION, "scenes", "o", "a", i)][0]
    assert keys.thumbnail_key(spec.SPEC_VERSION, "scenes", "o", "a", 4) not in m.storage.objects
    assert len(m.runpod.jobs) == 1  # no GPU work


def test_a_carried_scenes_row_whose_thumbnail_is_gone_runs_again(monkeypatch) -> None:
    from shared import spec
    from shared.pipeline import keys

    m = Machine(channels=("video_clip", "scenes"))
    m.upload("o", "a")
    m.webhook("o", "a", m.runpod.finish(m.job("o", "a")))
    del m.storage.objects[keys.thumbnail_key(spec.SPEC_VERSION, "scenes", "o", "a", 2)]
    monkeypatch.setattr(spec, "SPEC_VERSION", "2099-01-01-00000000")
    m.p.advance("o", "a")
    job = m.runpod.jobs[m.job("o", "a")]["input"]
    assert job["channels"] == ["scenes"] and len(m.runpod.jobs) == 2


def test_a_scenes_result_keeps_each_scene_span_for_the_search_index() -> None:
    m = Machine(channels=("video_clip", "scenes"))
    m.upload("o", "a")
    assert m.webhook("o", "a", m.runpod.finish(m.job("o", "a"))) == "applied"
    _, rows = m.ledger.rows("o", "a")
    assert rows["scenes"]["spans"] == [[0.0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]
    assert rows["scenes"]["timestamps"] == [0.125, 0.375, 0.625, 0.875]
    assert "spans" not in rows["video_clip"] or rows["video_clip"]["spans"] is None


@pytest.mark.parametrize(
    "scenes",
    [
        [{"start": 0.0, "end": 1.0}, {"start": 2.0, "end": 1.5}],  # ends before it starts
        [{"start": 2.0, "end": 3.0}, {"start": 0.0, "end": 1.0}],  # out of order
        [{"start": -1.0, "end": 1.0}],
        [{"start": 0.0, "end": float("nan")}],
        [{"start": 0.0, "end": 1.0}] * 5,  # more than max_frames
    ],
)
def test_scene_spans_that_cannot_be_spans_are_a_bad_output(scenes) -> None:
    from shared.pipeline.job_output import ChannelReport

    payload = {
        "status": "COMPLETED",
        "output": {"channels": {"scenes": {"status": "succeeded", "scenes": scenes}}},
    }
    got = parse_result(payload, max_seconds=600, max_frames=4).channels["scenes"]
    assert not isinstance(got, ChannelReport) and got["code"] == "bad_output"
