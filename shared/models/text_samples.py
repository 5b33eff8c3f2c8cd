"""Deterministic sample texts: the export's parity probes, the tests' mix and the text benchmark.

`sample_texts(n, seed)` cycles through three kinds, like the Lambda's real traffic: short search
queries (2-10 words), passages (100-300 words) and code snippets. `EDGE_TEXTS` are the inputs
tokenizers get wrong first: empty, whitespace-only, unicode, emoji, special-token text, a text far
over the 256-token window. `NON_ENGLISH_TEXTS` are short passages in other languages and scripts.
`probe_set()` is the small fixed mix the runtime self-check embeds at cold start (its reference
vectors are baked beside the model by the export). Pure Python, no model needed.
"""

from __future__ import annotations

import random

SHORT, PASSAGE, CODE = "short", "passage", "code"
KINDS = (SHORT, PASSAGE, CODE)

_VOCABULARY = (
    "the of and to in is was for on that with as by at from this be are it an or which have has not "
    "video audio clip frame search result vector embedding model upload bucket queue lambda function "
    "latency throughput request response server memory cost storage network user owner item channel "
    "mountain river city music history science football kitchen garden travel weather market company "
    "camera lesson recipe interview concert tutorial review trailer episode podcast lecture match goal "
    "quickly slowly carefully often never always today yesterday tomorrow morning evening night week "
    "bright dark quiet loud simple complex early late small large warm cold new old fast slow happy "
    "explain show find play watch listen build cook learn teach compare describe record edit share"
)
_WORDS = tuple(_VOCABULARY.split())

_CODE = (
    "def {a}({b}, {c}):\n    return {b} + {c}\n",
    "for (int {b} = 0; {b} < n; ++{b}) {{ {a} += x[{b}]; }}",
    "SELECT {b}, {c} FROM {a} WHERE owner_id = ? ORDER BY created_at DESC LIMIT 50;",
    "class {A}:\n    def {a}(self, {b}: str) -> list[str]:\n        return {b}.split()\n",
    "const {a} = async ({b}) => {{ const r = await fetch({b}); return r.json(); }};",
    "fn {a}({b}: &[f32]) -> f32 {{ {b}.iter().map(|v| v * v).sum::<f32>().sqrt() }}",
    'if err := {a}({b}); err != nil {{ return fmt.Errorf("{c}: %w", err) }}',
)
_IDENTS = ("items", "total", "parse", "embed", "vector", "chunk", "offset", "batch", "frame", "owner")

# Edge cases every parity check includes (id -> text).
EDGE_TEXTS: dict[str, str] = {
    "empty": "",
    "whitespace": " \n\t  ",
    "unicode": "Café naïve résumé, Zürich — 東京の夜景とラーメン; Ελληνικά κείμενα; Привет, мир!",
    "emoji": "🚀🔥 launch day 🎉 ✨",
    "special_tokens": "how to cook pasta [SEP] a quick weeknight recipe [SEP] pasta recipe",
    "numbers": "Order #12345 shipped on 2024-03-07 at 14:05 UTC, total $1,299.99 (3 items).",
    "long_word": "x" * 300,
    "over_window": " ".join(["the quick brown fox jumps over the lazy dog near the river bank"] * 40),
}


# Other languages and scripts (the tokenizer is uncased English WordPiece: these are its hard cases).
NON_ENGLISH_TEXTS: tuple[str, ...] = (
    "Wie kann ich mein Fahrrad im Winter richtig lagern, damit die Kette nicht rostet?",
    "La réunion de demain est reportée à jeudi matin ; merci de prévenir l'équipe.",
    "¿Cuál es la mejor manera de aprender a programar en Python desde cero?",
    "東京の夜景は本当に美しい。週末に友達と一緒に新しいラーメン屋に行きました。",
    "如何在家里用简单的材料做一个好吃的蛋糕？",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "مرحبا بكم في دورة تعلم الآلة، سنبدأ اليوم بالانحدار الخطي.",
    "भारत एक विशाल देश है जहाँ अनेक भाषाएँ बोली जाती हैं।",
    "Ελληνικά: η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "한국어 문장을 임베딩 모델이 얼마나 잘 처리하는지 시험해 봅시다.",
)


def _passage(rng: random.Random, words: int) -> str:
    out: list[str] = []
    while len(out) < words:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += rng.choice((".", ".", ".", ",", "?", "!"))
        out.extend(sentence)
    text = " ".join(out[:words])
    return text if text[-1] in ".?!" else text.rstrip(",") + "."


def _code(rng: random.Random) -> str:
    a, b, c = rng.sample(_IDENTS, 3)
    parts = [rng.choice(_CODE).format(a=a, b=b, c=c, A=a.capitalize()) for _ in range(rng.randint(1, 4))]
    return "\n".join(parts)


def sample_kind(i: int) -> str:
    """The kind of `sample_texts(...)[i]`."""
    return KINDS[i % len(KINDS)]


def sample_texts(n: int = 300, seed: int = 0) -> list[str]:
    """`n` texts cycling short query / 100-300-word passage / code snippet; same (n, seed), same texts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = sample_kind(i)
        if kind == SHORT:
            out.append(_passage(rng, rng.randint(2, 10)).rstrip(".?!"))
        elif kind == PASSAGE:
            out.append(_passage(rng, rng.randint(100, 300)))
        else:
            out.append(_code(rng))
    return out


def probe_set() -> list[str]:
    """The runtime self-check's probes: 18 texts, ~500 tokens (about 0.1-0.2 s on one core at cold start).

    Short queries, code, a 100-token passage, non-English in six scripts, edge cases."""
    mix = sample_texts(15, seed=2)  # 5 short, 5 passages, 5 code
    shorts = [t for i, t in enumerate(mix) if sample_kind(i) == SHORT]
    codes = [t for i, t in enumerate(mix) if sample_kind(i) == CODE]
    passage = " ".join(mix[1].split()[:90])
    edges = [EDGE_TEXTS[k] for k in ("empty", "unicode", "special_tokens", "numbers")]
    return [*shorts, codes[0], codes[3], passage, *NON_ENGLISH_TEXTS[:6], *edges]
