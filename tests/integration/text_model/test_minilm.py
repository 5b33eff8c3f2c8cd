"""MiniLMOnnx (the Lambda text model) against sentence-transformers on the same real checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.errors import InvalidInput, ModelNotFound, ModelUnhealthy
from shared.models import registry
from shared.models.minilm_export import main as export_main
from shared.models.minilm_export import probe_texts
from shared.models.minilm_onnx import (
    AUTO_MIN_COSINE,
    FP32_FILE,
    INT8_FILE,
    NAME,
    PROBE_FILE,
    MiniLMOnnx,
    Probe,
)
from shared.models.text_samples import EDGE_TEXTS, NON_ENGLISH_TEXTS, probe_set, sample_kind, sample_texts
from shared.settings import TextSettings

pytestmark = pytest.mark.integration

# A different seed from the export's own parity probes (seed 0): this checks generalisation.
MIX = sample_texts(45, seed=3)
TEXTS = MIX + list(EDGE_TEXTS.values()) + list(NON_ENGLISH_TEXTS)
LABELS = (
    [f"{sample_kind(i)}[{i}]" for i in range(len(MIX))]
    + list(EDGE_TEXTS)
    + [f"non_english[{i}]" for i in range(len(NON_ENGLISH_TEXTS))]
)


@pytest.fixture(scope="module")
def reference(sentence_transformer) -> np.ndarray:
    return sentence_transformer.encode(TEXTS, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)


def _worst(cos: np.ndarray) -> str:
    i = int(np.argmin(cos))
    return f"worst {LABELS[i]}: {cos[i]:.6f} ({TEXTS[i][:50]!r})"


def test_texts_cover_the_mix(minilm: MiniLMOnnx) -> None:
    counts = minilm.token_counts(TEXTS)
    assert {sample_kind(i) for i in range(len(MIX))} == {"short", "passage", "code"}
    assert max(counts) > 256 and min(counts) == 2  # over the window, and "" -> [CLS] [SEP]
    assert any(100 <= len(t.split()) <= 300 for t in MIX)


def test_fp32_matches_sentence_transformers(minilm: MiniLMOnnx, reference: np.ndarray) -> None:
    ours = minilm.embed(TEXTS)
    cos = np.sum(ours * reference, axis=1)
    assert cos.min() >= 0.9999, _worst(cos)
    assert minilm.model_label.endswith("onnx-fp32")
    assert minilm.model_label.startswith("sentence-transformers/all-MiniLM-L6-v2@")


def test_shape_dtype_unit_norm(minilm: MiniLMOnnx) -> None:
    vectors = minilm.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert minilm.dims == 384 and minilm.name == NAME and minilm.max_tokens == 256
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def test_batch_equals_single_and_keeps_input_order(minilm: MiniLMOnnx) -> None:
    batch = minilm.embed(TEXTS)
    singles = np.stack([minilm.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, singles, atol=2e-5)
    np.testing.assert_allclose(minilm.embed(TEXTS[::-1]), batch[::-1], atol=2e-5)


def test_similar_texts_are_closer_than_unrelated(minilm: MiniLMOnnx) -> None:
    bread, loaf, stocks = minilm.embed(
        [
            "How do I bake sourdough bread at home?",
            "A simple recipe for baking a sourdough loaf",
            "Stock markets fell sharply after the interest rate decision",
        ]
    )
    assert bread @ loaf > 0.6
    assert bread @ loaf > bread @ stocks + 0.3


def test_empty_and_whitespace_embed_like_sentence_transformers_empty(minilm, sentence_transformer) -> None:
    empty, blank, tabs = minilm.embed(["", "   ", "\n\t "])
    st_empty = sentence_transformer.encode([""], normalize_embeddings=True)[0]
    assert np.isfinite(empty).all() and abs(np.linalg.norm(empty) - 1) < 1e-5
    assert empty @ st_empty >= 0.9999
    np.testing.assert_allclose(blank, empty, atol=1e-6)
    np.testing.assert_allclose(tabs, empty, atol=1e-6)
    assert minilm.token_counts(["", "   "]) == [2, 2]


def test_text_over_window_equals_its_truncation(minilm: MiniLMOnnx) -> None:
    words = [f"w{i % 7}" for i in range(400)]  # "w0".."w6": one word = 2 tokens ("w", "##0")
    long_text = " ".join(words)
    head = " ".join(words[:127])  # 254 word tokens + [CLS] + [SEP] = the 256-token window
    short = " ".join(words[:100])
    assert minilm.token_counts([long_text, head]) == [802, 256]
    long_vec, head_vec, short_vec = minilm.embed([long_text, head, short])
    assert long_vec @ head_vec > 0.99999
    assert long_vec @ short_vec < 0.9999  # the test can tell a different cut apart


def test_token_counts_are_untruncated_and_include_specials(minilm: MiniLMOnnx) -> None:
    # over_window: 13 one-token words x 40, plus [CLS] and [SEP]
    assert minilm.token_counts(["hello world", "", EDGE_TEXTS["over_window"]]) == [4, 2, 522]


def test_bad_input_is_refused(minilm: MiniLMOnnx) -> None:
    with pytest.raises(InvalidInput) as err:
        minilm.embed(["ok", 3])  # type: ignore[list-item]
    assert err.value.field == "texts[1]"
    with pytest.raises(InvalidInput):
        minilm.embed("a bare string is not a batch")  # type: ignore[arg-type]


def test_warmup_passes(minilm: MiniLMOnnx) -> None:
    minilm.warmup()


def test_missing_model_dir_names_dir_and_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        MiniLMOnnx.load(TextSettings(model_dir=tmp_path))
    message = str(err.value)
    assert str(tmp_path / NAME) in message
    assert "se bake" in message and "se setup-models" in message


def test_manifest_records_fusion_opset_tools_and_parity(minilm_model_dir: Path) -> None:
    manifest = registry.read_manifest(minilm_model_dir / NAME)
    onnx_info = manifest["onnx"]
    assert onnx_info["opset"] == 17 and onnx_info["fp32"] == FP32_FILE
    assert onnx_info["fused"]["Attention"] == 6 and onnx_info["fused"]["SkipLayerNormalization"] == 12
    assert onnx_info["fused"]["EmbedLayerNormalization"] == 1
    assert {"torch", "onnx", "onnxruntime", "transformers"} <= set(manifest["export_tools"])
    assert manifest["parity"]["fp32"]["min_cosine"] >= 0.9999
    assert manifest["random"] is False and manifest["revision"] == registry.get(NAME).revision


def test_int8_ships_only_when_it_meets_the_bar(minilm_model_dir: Path) -> None:
    manifest = registry.read_manifest(minilm_model_dir / NAME)
    int8 = manifest["parity"]["int8"]
    shipped = (minilm_model_dir / NAME / INT8_FILE).is_file()
    assert shipped == int8["shipped"] == (int8["min_cosine"] >= 0.99)
    assert manifest["onnx"]["int8"] == (INT8_FILE if shipped else None)


def test_int8_close_to_sentence_transformers(
    minilm_int8: MiniLMOnnx, minilm_model_dir: Path, reference: np.ndarray
) -> None:
    if not (minilm_model_dir / NAME / INT8_FILE).is_file():
        assert minilm_int8.model_label.endswith("onnx-fp32")  # asked for int8, none shipped: fp32 serves
        return
    assert minilm_int8.model_label.endswith("onnx-int8") and minilm_int8.precision == "int8"
    cos = np.sum(minilm_int8.embed(TEXTS) * reference, axis=1)
    assert cos.min() >= 0.99, _worst(cos)


def test_int8_batches_and_a_vector_does_not_depend_on_its_batch_mates(minilm_int8: MiniLMOnnx) -> None:
    """Static activation scales: the same text gives the same vector alone, in any batch, in any order."""
    assert minilm_int8.batch_size > 1  # int8 batches like fp32 (no one-text-per-run fallback)
    batch = minilm_int8.embed(TEXTS)
    singles = np.stack([minilm_int8.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, singles, atol=1e-6, rtol=0)
    np.testing.assert_allclose(minilm_int8.embed(TEXTS[::-1]), batch[::-1], atol=1e-6, rtol=0)
    # The shortest text among the longest (padded to 256) and among other short ones.
    short = TEXTS[0]
    mates = [short, EDGE_TEXTS["over_window"], *MIX[1:30:3]]
    np.testing.assert_allclose(minilm_int8.embed(mates)[0], singles[0], atol=1e-6, rtol=0)


def _copy_folder(src: Path, dst: Path, *, int8: bool, probe: Path | None = None) -> None:
    """A model folder of symlinks to `src` (optionally without the int8 graph, or with another probe file)."""
    files = [*registry.get(NAME).files, FP32_FILE, registry.MANIFEST, PROBE_FILE]
    if int8:
        files.append(INT8_FILE)
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        (dst / f).symlink_to(probe if f == PROBE_FILE and probe is not None else src / f)


@pytest.mark.parametrize("precision", ["int8", "auto"])
def test_without_an_int8_graph_fp32_serves(minilm_model_dir: Path, tmp_path: Path, precision: str) -> None:
    _copy_folder(minilm_model_dir / NAME, tmp_path / NAME, int8=False)
    model = MiniLMOnnx.load(TextSettings(model_dir=tmp_path, precision=precision))
    assert model.model_label.endswith("onnx-fp32") and model.precision == "fp32"
    assert model.self_check.served == "fp32" and model.self_check.min_cosine is None
    assert "no int8 graph" in model.self_check.reason
    assert model.embed(["hello"]).shape == (1, 384)


def test_auto_serves_int8_exactly_when_its_self_check_passes(minilm_model_dir: Path) -> None:
    if not (minilm_model_dir / NAME / INT8_FILE).is_file():
        pytest.skip("the export left int8 out on this machine (its manifest says why)")
    model = MiniLMOnnx.load(TextSettings(model_dir=minilm_model_dir, precision="auto", threads=1))
    check = model.self_check
    assert check.requested == "auto" and check.min_cosine is not None
    assert (check.served == "int8") == (check.min_cosine >= AUTO_MIN_COSINE)
    assert model.model_label.endswith(f"onnx-{check.served}") and model.precision == check.served
    assert check.cpu and set(check.isa) <= {"avx2", "avx512", "vnni", "amx"}
    logged = check.as_log()
    assert logged["precision"] == check.served and logged["int8_min_cosine"] == round(check.min_cosine, 6)


def test_auto_falls_back_to_fp32_when_int8_misses_the_reference(
    minilm_model_dir: Path, tmp_path: Path
) -> None:
    """A CPU where int8 is inaccurate looks like this: the probe's reference vectors disagree with int8."""
    if not (minilm_model_dir / NAME / INT8_FILE).is_file():
        pytest.skip("no int8 graph to check")
    probe = Probe.read(minilm_model_dir / NAME / PROBE_FILE)
    skewed = probe.reference.copy()
    skewed[3] = np.roll(skewed[3], 1)  # one probe's reference no longer matches any int8 output
    np.savez(tmp_path / "probe.npz", texts=np.array(probe.texts), reference=skewed)
    _copy_folder(minilm_model_dir / NAME, tmp_path / NAME, int8=True, probe=tmp_path / "probe.npz")
    model = MiniLMOnnx.load(TextSettings(model_dir=tmp_path, precision="auto", threads=1))
    assert model.precision == "fp32" and model.model_label.endswith("onnx-fp32")
    assert model.self_check.min_cosine < AUTO_MIN_COSINE and "< 0.995" in model.self_check.reason
    forced = MiniLMOnnx.load(TextSettings(model_dir=tmp_path, precision="int8", threads=1))
    assert forced.precision == "int8"  # int8 asked for explicitly is served, with a warning


def test_probe_file_holds_the_probe_set_and_sentence_transformers_vectors(
    minilm_model_dir: Path, sentence_transformer
) -> None:
    probe = Probe.read(minilm_model_dir / NAME / PROBE_FILE)
    assert list(probe.texts) == probe_set()
    st = sentence_transformer.encode(list(probe.texts), normalize_embeddings=True)
    assert np.sum(st * probe.reference, axis=1).min() >= 0.9999


def test_health_checks_the_probe_against_its_reference(minilm: MiniLMOnnx, tmp_path: Path) -> None:
    minilm.health()
    wrong = MiniLMOnnx(
        minilm._session,
        minilm._tokenizer,
        dims=384,
        max_tokens=256,
        batch_size=32,
        model_label=minilm.model_label,
        precision="fp32",
        probe=Probe(minilm.probe.texts, -minilm.probe.reference),
    )
    with pytest.raises(ModelUnhealthy, match="cosine"):
        wrong.health()


def test_the_accuracy_corpus_covers_queries_long_passages_code_and_non_english(minilm: MiniLMOnnx) -> None:
    texts = probe_texts()
    counts = minilm.token_counts(texts)
    assert sum(n > 256 for n in counts) >= 10 and min(counts) == 2
    assert set(NON_ENGLISH_TEXTS) <= set(texts)
    assert {sample_kind(i) for i in range(90)} == {"short", "passage", "code"}


def test_export_cli_refuses_incomplete_checkpoint_and_writes_nothing(tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert"}))
    out = tmp_path / "models" / NAME
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_runtime_modules_import_without_torch_or_transformers() -> None:
    code = (
        "import sys, shared.models.minilm_onnx, shared.text.channels, shared.models.text_samples; "
        "bad = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(bad)}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or result.stdout
