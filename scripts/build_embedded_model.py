"""Rebuild the embedded tiny-shakespeare model (HF safetensors + GGUF) from scratch.

Needs: torch, transformers, sentencepiece, protobuf, safetensors, gguf (see `pip install -e .[build-model]`).
The GGUF file is written by llama.cpp's own converter, taken from the llama-cpp-python
source distribution (downloaded with `pip download` when --llama-cpp-src is not given).

    python scripts/build_embedded_model.py --data ../shared/data/tinyshakespeare.txt

Fixed seed, fixed step count: the same inputs give the same weights on the same torch build.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "vllama_jupyter" / "data" / "tiny-shakespeare"
SEED = 1234


def train_tokenizer(text_path: Path, workdir: Path, vocab: int) -> Path:
    import sentencepiece as spm

    prefix = workdir / "tokenizer"
    spm.SentencePieceTrainer.train(
        input=str(text_path), model_prefix=str(prefix), vocab_size=vocab, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        max_sentence_length=100000, num_threads=2, minloglevel=2,
        allow_whitespace_only_pieces=True, split_by_whitespace=True,
    )
    return prefix.with_suffix(".model")


def encode_corpus(sp_model: Path, text: str):
    import sentencepiece as spm
    import torch

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    # Encode paragraph by paragraph (speaker turns) so the tokenizer never sees megabyte lines.
    ids: list[int] = []
    for para in text.split("\n\n"):
        ids.extend(sp.encode(para + "\n\n"))
    return torch.tensor(ids, dtype=torch.long)


def train_model(data, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, max_position_embeddings=args.ctx,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, hidden_act="silu",
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    split = int(len(data) * 0.95)
    train, val = data[:split], data[split:]
    gen = torch.Generator().manual_seed(SEED)
    seq = args.seq - 1  # position 0 is always BOS

    def batch(src):
        starts = torch.randint(0, len(src) - seq - 1, (args.batch,), generator=gen)
        x = torch.stack([src[s:s + seq + 1] for s in starts])
        bos = torch.full((args.batch, 1), 1, dtype=torch.long)
        x = torch.cat([bos, x], dim=1)
        return x[:, :-1], x[:, 1:]

    model.train()
    t0 = time.time()
    for step in range(args.steps):
        warm = 100
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {lr:.2e}  {time.time() - t0:6.0f}s", flush=True)
    model.eval()
    with torch.no_grad():
        x, y = batch(val)
        logits = model(input_ids=x).logits
        vloss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    print(f"validation loss {vloss.item():.3f}")
    return model


def llama_cpp_converter(src: str | None) -> Path:
    if src:
        return Path(src)
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "llama-cpp-python", "-d", str(tmp)], check=True)
    archive = glob.glob(str(tmp / "llama_cpp_python-*.tar.gz"))[0]
    with tarfile.open(archive) as tf:
        tf.extractall(tmp, filter="data")
    return Path(glob.glob(str(tmp / "llama_cpp_python-*" / "vendor" / "llama.cpp"))[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"))
    ap.add_argument("--llama-cpp-src", help="llama.cpp source tree holding convert_hf_to_gguf.py")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp())
    text = Path(args.data).read_text(encoding="utf-8")
    sp_model = train_tokenizer(Path(args.data), work, args.vocab)
    data = encode_corpus(sp_model, text)
    print(f"corpus: {len(text):,} chars -> {len(data):,} tokens")
    model = train_model(data, args)

    hf_dir = OUT / "hf"
    shutil.rmtree(OUT, ignore_errors=True)
    hf_dir.mkdir(parents=True)
    model.to(torch.float16).save_pretrained(hf_dir, safe_serialization=True)
    shutil.copy(sp_model, hf_dir / "tokenizer.model")
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": True,
        "model_max_length": args.ctx}))
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(hf_dir)  # adds tokenizer.json

    conv = llama_cpp_converter(args.llama_cpp_src)
    subprocess.run([sys.executable, str(conv / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", "f16",
                    "--outfile", str(OUT / "model.gguf")], check=True)
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(OUT)}  {p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
