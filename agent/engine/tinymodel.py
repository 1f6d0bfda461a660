"""A tiny random-weight Llama GGUF: big enough to time, small enough for tests and demos.

Both engines load it because it carries SentencePiece-style tokenizer metadata (<unk>,
<s>, </s>, the 256 byte tokens, then filler pieces). Weights are seeded, so the same
parameters always give the same file (and the same sha256).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TinyLlamaParams:
    n_embd: int = 512
    n_layer: int = 4
    n_ff: int = 1536
    n_head: int = 8
    n_vocab: int = 1024
    n_ctx: int = 4096
    seed: int = 1234

    def n_params(self) -> int:
        per_layer = 4 * self.n_embd * self.n_embd + 3 * self.n_embd * self.n_ff + 2 * self.n_embd
        return 2 * self.n_vocab * self.n_embd + self.n_layer * per_layer + self.n_embd


def _vocab(n_vocab: int):
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    if n_vocab < len(tokens) + 1:
        raise ValueError(f"n_vocab must be > {len(tokens)}")
    for i in range(n_vocab - len(tokens)):
        tokens.append(f"\u2581t{i}")
        types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(n_vocab - 259)]
    return tokens, scores, types


def write_tiny_llama(path: Path, params: TinyLlamaParams = TinyLlamaParams()) -> Path:
    """Write an F32 Llama GGUF with random weights to ``path`` (atomically)."""
    import gguf

    p = params
    if p.n_embd % p.n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    rng = np.random.default_rng(p.seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    tmp = path.with_name(path.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("hwmatrix-tiny-llama")
    writer.add_context_length(p.n_ctx)
    writer.add_embedding_length(p.n_embd)
    writer.add_block_count(p.n_layer)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head)
    writer.add_rope_dimension_count(p.n_embd // p.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = _vocab(p.n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    ones = np.ones(p.n_embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weight(p.n_vocab, p.n_embd))
    for i in range(p.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(p.n_embd, p.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(p.n_ff, p.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(p.n_ff, p.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(p.n_embd, p.n_ff))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", weight(p.n_vocab, p.n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def params_from_dict(values: dict | None) -> TinyLlamaParams:
    base = asdict(TinyLlamaParams())
    base.update(values or {})
    return TinyLlamaParams(**base)
