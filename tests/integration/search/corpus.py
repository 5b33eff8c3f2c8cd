"""A small labelled corpus with a fake "semantic" text encoder, for the search integration tests.

The encoder maps words to concepts through a synonym table (so a paraphrase meets its sentence) and is
blind to every other word (so a rare exact term, a code or a name, only BM25 can find). Half the queries
are paraphrases (no word in common with their sentence: BM25 cannot find them), half are exact rare
terms (the encoder cannot tell them apart): hybrid must find both kinds.
"""

from __future__ import annotations

import numpy as np

SYN = {
    "ferry": "boat", "boat": "boat", "vessel": "boat",
    "leaves": "depart", "departs": "depart", "sails": "depart",
    "noon": "midday", "midday": "midday",
    "invoice": "bill", "bill": "bill", "paid": "pay", "settle": "pay",
    "dog": "dog", "puppy": "dog", "hound": "dog", "barked": "noise", "howled": "noise",
    "rain": "weather", "storm": "weather", "downpour": "weather", "tomorrow": "future", "later": "future",
    "kitchen": "room", "garage": "room", "cellar": "room", "keys": "keys", "fob": "keys",
    "doctor": "health", "physician": "health", "appointment": "meeting", "visit": "meeting",
    "train": "rail", "railway": "rail", "late": "delay", "delayed": "delay",
}  # fmt: skip
CONCEPTS = sorted(set(SYN.values()))


def fake_minilm(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 384), np.float32)
    for n, text in enumerate(texts):
        out[n, 0] = 0.3  # a constant bias: never a zero vector
        for word in text.lower().replace(",", " ").replace(".", " ").split():
            if word in SYN:
                out[n, 1 + CONCEPTS.index(SYN[word])] += 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# (item, segment texts); every segment is 24 s long, 25 s apart: one window each
ITEMS = {
    "trip": [
        "welcome aboard, everyone",
        "the ferry leaves at noon from pier seven",
        "bring a coat, the storm comes later",
        "the dog barked at the gulls",
    ],
    "office": [
        "please settle invoice ZX4711 before friday",
        "the invoice for march was paid already",
        "my doctor appointment moved to tomorrow",
        "the train was delayed again",
    ],
    "home": [
        "the keys are in the kitchen drawer",
        "the puppy howled at the rain",
        "Quimby fixed the garage door",
        "the cellar floods in a downpour",
    ],
}
SEG_S, SEG_STEP = 24.0, 25.0

# (query, item, segment index): paraphrases (vector only) and rare exact terms (BM25 only)
QUERIES = [
    ("vessel sails midday", "trip", 1),
    ("hound noise", "trip", 3),
    ("physician visit", "office", 2),
    ("railway late", "office", 3),
    ("fob", "home", 0),
    ("ZX4711", "office", 0),
    ("Quimby", "home", 2),
    ("pier seven", "trip", 1),
    ("gulls", "trip", 3),
    ("drawer", "home", 0),
]


def transcript(item: str) -> dict:
    segs = [
        {"start": i * SEG_STEP, "end": i * SEG_STEP + SEG_S, "text": t} for i, t in enumerate(ITEMS[item])
    ]
    return {
        "text": " ".join(ITEMS[item]),
        "segments": segs,
        "language": "en",
        "duration": len(segs) * SEG_STEP,
    }
