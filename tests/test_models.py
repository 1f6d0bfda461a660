"""Model files: the tiny model is deterministic and loadable metadata-wise; sha256 is enforced."""
from __future__ import annotations

import gguf
import pytest

from agent.spec.cellspec import ModelSpec
from agent.engine.models import ModelError, file_sha256, model_file, source_model
from agent.engine.tinymodel import TinyLlamaParams, write_tiny_llama

SMALL = TinyLlamaParams(n_embd=64, n_layer=1, n_ff=128, n_head=4, n_vocab=300)


def test_tiny_model_has_llama_metadata_and_sentencepiece_vocab(tmp_path):
    path = write_tiny_llama(tmp_path / "t.gguf", SMALL)
    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    first = [bytes(tokens.parts[i]).decode() for i in tokens.data[:4]]
    assert first == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert len(tokens.data) == SMALL.n_vocab
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.0.ffn_down.weight"} <= names


def test_default_tiny_model_is_about_15m_parameters():
    assert 14e6 < TinyLlamaParams().n_params() < 16e6


def test_same_params_give_the_same_file(tmp_path):
    a = write_tiny_llama(tmp_path / "a.gguf", SMALL)
    b = write_tiny_llama(tmp_path / "b.gguf", SMALL)
    assert file_sha256(a) == file_sha256(b)


def test_a_path_model_with_a_wrong_sha256_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF-not-really")
    good = file_sha256(path)
    assert source_model(ModelSpec(name="m", path=str(path), sha256=good)) == path
    with pytest.raises(ModelError, match="sha256 mismatch"):
        source_model(ModelSpec(name="m", path=str(path), sha256="0" * 64))


def test_missing_model_file_and_imatrix_quants_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="not found"):
        source_model(ModelSpec(name="m", path=str(tmp_path / "none.gguf")))
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match="importance matrix"):
        model_file(ModelSpec(name="m", path=str(path)), "IQ2_XXS", None, None)
