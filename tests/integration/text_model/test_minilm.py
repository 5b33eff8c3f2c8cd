"""MiniLMOnnx (the Lambda text model) against sentence-transformers on the same real checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.errors import InvalidInput, ModelNotFound
from shared.models import registry
from shared.models.minilm_export import main as export_main
from shared.models.minilm_onnx import FP32_FILE, INT8_FILE, NAME, MiniLMOnnx
from shared.settings import TextSettings
from shared.text.samples import EDGE_TEXTS, sample_kind, sample_texts

pytestmark = pytest.mark.integration

# A different seed from the export's own parity probes (seed 0): this checks generalisation.
MIX = sample_texts(45, seed=3)
TEXTS = MIX + list(EDGE_TEXTS.values())
LABELS = [f"{sample_kind(i)}[{i}]" for i in range(len(MIX))] + list(EDGE_TEXTS)


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


def test_int8_close_to_sentence_transformers_and_batch_independent(
    minilm_int8: MiniLMOnnx, minilm_model_dir: Path, reference: np.ndarray
) -> None:
    if not (minilm_model_dir / NAME / INT8_FILE).is_file():
        assert minilm_int8.model_label.endswith("onnx-fp32")  # asked for int8, none shipped: fp32 serves
        return
    assert minilm_int8.model_label.endswith("onnx-int8")
    ours = minilm_int8.embed(TEXTS)
    cos = np.sum(ours * reference, axis=1)
    assert cos.min() >= 0.99, _worst(cos)
    np.testing.assert_allclose(ours[:5], np.stack([minilm_int8.embed([t])[0] for t in TEXTS[:5]]), atol=1e-6)


def test_quantized_without_int8_file_serves_fp32(minilm_model_dir: Path, tmp_path: Path) -> None:
    src = minilm_model_dir / NAME
    dst = tmp_path / NAME
    for f in (*registry.get(NAME).files, FP32_FILE, registry.MANIFEST):
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        (dst / f).symlink_to(src / f)
    model = MiniLMOnnx.load(TextSettings(model_dir=tmp_path, quantized=True))
    assert model.model_label.endswith("onnx-fp32")
    assert model.embed(["hello"]).shape == (1, 384)


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
        "import sys, shared.models.minilm_onnx, shared.text.channels, shared.text.samples; "
        "bad = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(bad)}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or result.stdout
