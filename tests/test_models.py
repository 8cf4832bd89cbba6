"""Model references: embedded, local files/folders, Hub repo ids through a real local HF cache."""
import json
import shutil
from pathlib import Path

import pytest

from vllama_jupyter.errors import VllamaError
from vllama_jupyter.models import EMBEDDED_DIR, list_models, resolve

from .conftest import run_python

GGUF = EMBEDDED_DIR / "model.gguf"


def test_embedded_forms():
    assert resolve(None, "llamacpp").path == GGUF
    assert resolve("embedded", "vllm").path == EMBEDDED_DIR / "hf"
    assert (EMBEDDED_DIR / "hf" / "config.json").exists() and GGUF.stat().st_size < 10 * 2**20


def test_local_file_and_folders(tmp_path):
    assert resolve(str(GGUF), "llamacpp").source == "local"
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(GGUF, folder / "tiny-Q8_0.gguf")
    shutil.copy(GGUF, folder / "tiny-Q4_K_M.gguf")
    assert resolve(str(folder), "llamacpp").path.name == "tiny-Q4_K_M.gguf"  # preferred quant
    assert resolve(str(EMBEDDED_DIR / "hf"), "vllm").form == "hf"


@pytest.mark.parametrize("ref, engine, words", [
    (str(GGUF), "vllm", "needs a Hugging Face model folder"),
    (str(EMBEDDED_DIR / "hf"), "llamacpp", "holds no .gguf file, which llama.cpp needs (it is a Hugging Face model folder"),
    ("nowhere/model.gguf", "llamacpp", "model file not found: nowhere/model.gguf"),
    ("./missing", "llamacpp", "model file not found"),
    ("frobnicate", "llamacpp", "unknown model 'frobnicate'"),
])
def test_no_loadable_form_is_one_clear_line(ref, engine, words):
    with pytest.raises(VllamaError) as e:
        resolve(ref, engine)
    assert words in str(e.value) and "\n" not in str(e.value)


def make_hf_cache(root: Path) -> Path:
    """A real Hugging Face cache layout, as huggingface_hub writes it, holding two repos."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, files in {"acme/tiny-GGUF": {"tiny-Q4_K_M.gguf": GGUF, "tiny-Q8_0.gguf": GGUF},
                        "acme/tiny": {p.name: p for p in (EMBEDDED_DIR / "hf").iterdir()}}.items():
        base = root / ("models--" + repo.replace("/", "--"))
        snap = base / "snapshots" / commit
        snap.mkdir(parents=True)
        (base / "refs").mkdir()
        (base / "refs" / "main").write_text(commit)
        for name, src in files.items():
            shutil.copy(src, snap / name)
    return root


def test_hub_repo_ids_resolve_offline_from_the_cache(tmp_path):
    cache = make_hf_cache(tmp_path / "hub")
    code = """
import json, vllama_jupyter as v
from vllama_jupyter.models import resolve
from vllama_jupyter.errors import VllamaError
out = {}
out["gguf"] = resolve("acme/tiny-GGUF", "llamacpp").path.name
out["pattern"] = resolve("acme/tiny-GGUF:Q8_0", "llamacpp").path.name
out["hf"] = resolve("acme/tiny", "vllm").path.name
for ref, eng in (("acme/absent", "llamacpp"), ("acme/tiny", "llamacpp"), ("acme/tiny-GGUF:Q2_K", "llamacpp")):
    try:
        resolve(ref, eng)
    except VllamaError as e:
        out[ref + "/" + eng] = str(e)
st = v.load("acme/tiny-GGUF", "llamacpp")
out["loaded"] = st["model"]
out["text"] = v.generate("ROMEO:", max_tokens=5, temperature=0).output_tokens
print(json.dumps(out))
"""
    r = run_python(code, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["gguf"] == "tiny-Q4_K_M.gguf" and out["pattern"] == "tiny-Q8_0.gguf"
    assert out["hf"] == "0123456789abcdef0123456789abcdef01234567"
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in out["acme/absent/llamacpp"]
    assert "has no GGUF file" in out["acme/tiny/llamacpp"]
    assert "no GGUF file in acme/tiny-GGUF matches 'Q2_K'" in out["acme/tiny-GGUF:Q2_K/llamacpp"]
    assert out["loaded"] == "acme/tiny-GGUF" and out["text"] == 5


def test_list_models_sees_folders(tmp_path):
    shutil.copy(GGUF, tmp_path / "x.gguf")
    rows = list_models([str(tmp_path)])
    assert rows[0]["model"] == "tiny-shakespeare"
    assert any(r["model"].endswith("x.gguf") for r in rows)
