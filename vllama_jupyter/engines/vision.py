"""Images into llama.cpp through its multimodal library, mtmd (llama-cpp-python's `mtmd_cpp`
bindings). The projector (an mmproj GGUF) loads beside the model. A prompt with images is split by
mtmd into text and image chunks when the request is made (a bad image fails then, with nothing
run); on the llama.cpp thread the chunks are written into the KV cache, and our own token loop
goes on from there, so streaming, interrupts, stops and logprobs are the same as for text."""
from __future__ import annotations

import ctypes
import weakref
from pathlib import Path

from ..errors import VllamaError
from . import llama_private as private



def find_projector(model: Path, given) -> Path | None:
    """The projector to load: the one given, else an mmproj*.gguf beside the model (the one named
    after it, full precision first), or None."""
    if given is not None:
        if not isinstance(given, (str, Path)) or not str(given).strip():
            raise VllamaError(f"mmproj must be the path of a projector GGUF file (got {given!r})")
        path = Path(given).expanduser()
        if not path.is_file():
            raise VllamaError(f"mmproj: no file at {str(path)!r}: give the path of the model's mmproj-*.gguf")
        return path
    from ..models import pick_projector

    found = sorted(p for p in model.parent.glob("mmproj*.gguf") if p.is_file() and p != model)
    named = [p for p in found if model.stem in p.stem]
    chosen = pick_projector([p.name for p in (named or found)])
    return model.parent / chosen if chosen else None


def check_projector(path: Path) -> str:
    """The projector type of a vision projector GGUF, or one line saying what the file is instead."""
    from .gguf import check_gguf

    meta = check_gguf(path)
    value = meta.get
    if value("general.architecture") != "clip" or not value("clip.has_vision_encoder"):
        raise VllamaError(f"{path.name} is not a vision projector (an mmproj GGUF with a vision encoder): "
                          "give the mmproj-*.gguf made for this model")
    return value("clip.projector_type") or value("clip.vision.projector_type") or "unknown"


class Projector:
    """One loaded mmproj: mtmd's context over the language model `llm`."""

    def __init__(self, path: Path, llm) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        from .gguf import last_error

        self.path = path
        self.kind = check_projector(path)
        self._mtmd = mtmd
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = bool(llama_cpp.llama_supports_gpu_offload())
        params.print_timings = False
        params.n_threads = llm.n_threads
        self.ctx = mtmd.mtmd_init_from_file(str(path).encode(), llm.model, params)
        if not self.ctx:
            raise VllamaError(f"llama.cpp could not load the projector {path.name} ({last_error()}): it must be "
                              "the mmproj made for this model")
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise VllamaError(f"{path.name} has no vision encoder: give the model's vision mmproj")
        self.marker = mtmd.mtmd_default_marker().decode("utf-8")

    def prepare(self, text: str, images, add_special: bool) -> "Prepared":
        """mtmd's chunks for `text` (with one marker per image) and the images (PNG bytes)."""
        mtmd = self._mtmd
        bitmaps = []
        try:
            for i, img in enumerate(images):
                buf = (ctypes.c_uint8 * len(img.png)).from_buffer(bytearray(img.png))
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(img.png), False)
                if not bitmap:
                    raise VllamaError(f"image {i}: llama.cpp could not decode it: give a PNG or JPEG image")
                bitmaps.append(bitmap)
            chunks = mtmd.mtmd_input_chunks_init()
            prepared = Prepared(mtmd, chunks)
            inp = mtmd.mtmd_input_text()
            raw = text.encode("utf-8")
            inp.text, inp.text_len, inp.add_special, inp.parse_special = raw, len(raw), add_special, True
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            rc = mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
        finally:
            for b in bitmaps:
                mtmd.mtmd_bitmap_free(b)
        if rc == 1:
            raise VllamaError(f"the prompt has {text.count(self.marker)} image places for {len(images)} images: "
                              f"leave {self.marker!r} out of the text")
        if rc != 0:
            raise VllamaError(f"llama.cpp could not prepare the images (mtmd error {rc}): give smaller or fewer images")
        prepared.read()
        return prepared

    def close(self) -> None:
        if self.ctx:
            self._mtmd.mtmd_free(self.ctx)
            self.ctx = None


class Prepared:
    """A prompt's chunks: text token ids, or an image's chunk and its token count."""

    def __init__(self, mtmd, chunks) -> None:
        self._mtmd = mtmd
        self.chunks = chunks
        self.parts: list[tuple[str, object, int]] = []   # ("text", ids, n) or ("image", chunk, n)
        self._free = weakref.finalize(self, mtmd.mtmd_input_chunks_free, chunks)

    def read(self) -> None:
        mtmd = self._mtmd
        for i in range(mtmd.mtmd_input_chunks_size(self.chunks)):
            chunk = mtmd.mtmd_input_chunks_get(self.chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                ids = [ptr[j] for j in range(n.value)]
                self.parts.append(("text", ids, len(ids)))
            else:
                self.parts.append(("image", chunk, int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))))

    @property
    def n_tokens(self) -> int:
        return sum(n for _, _, n in self.parts)

    @property
    def image_tokens(self) -> list[int]:
        return [n for kind, _, n in self.parts if kind == "image"]

    def evaluate(self, projector: Projector, llm) -> list[int]:
        """Write the prompt into `llm`'s KV cache from position 0 (on the llama.cpp thread); returns
        the prompt as `llm` sees it, its last text token still to evaluate (for the first logits).
        Image positions read -1 in `llm.input_ids`, so no later prompt matches them as a cached prefix."""
        import llama_cpp

        mtmd = self._mtmd
        if not self.parts or self.parts[-1][0] != "text":
            raise VllamaError("the prompt ends with an image: put some text after it")
        llm.reset()
        private.clear(llm)
        *head, (_, last, _) = self.parts
        for kind, what, n in head + [("text", last[:-1], len(last) - 1)]:
            if kind == "text":
                if what:
                    llm.eval(what)
                continue
            past = llama_cpp.llama_pos(0)
            rc = mtmd.mtmd_helper_eval_chunk_single(projector.ctx, private.context(llm), what, llm.n_tokens, 0,
                                                    llm.n_batch, False, ctypes.byref(past))
            if rc != 0:
                raise VllamaError(f"llama.cpp could not encode an image (mtmd error {rc})")
            llm.input_ids[llm.n_tokens:past.value] = -1
            llm.n_tokens = past.value
        return llm.input_ids[:llm.n_tokens].tolist() + [last[-1]]

    def close(self) -> None:
        self._free()


def with_markers(messages: list[dict], marker: str) -> list[dict]:
    """The messages with each image part replaced by the projector's marker in the text."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            m = {**m, "content": "".join(p["text"] if p["type"] == "text" else marker for p in content)}
        out.append(m)
    return out
