"""Images a notebook holds, as the model is shown them: a matplotlib Figure or Axes, a PIL image,
a numpy array (H×W, H×W×1/3/4; uint8, or floats in [0, 1]), PNG/JPEG bytes, IPython's Image,
a file path, or a data: URL. Each becomes RGB PNG bytes with its SHA-256, size and the mode it
came in (the record keeps those, never the pixels); anything else is one VllamaError line."""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import warnings
from dataclasses import dataclass

from .errors import VllamaError, notice

MAX_SIDE = 16384
MAX_PIXELS = 50_000_000
FIG_DPI = 100


@dataclass(frozen=True)
class Image:
    png: bytes
    width: int
    height: int
    mode: str        # the mode it came in (an opaque RGBA counts as RGB); the model is shown RGB
    sha256: str

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def record(self) -> dict:
        return {"sha256": self.sha256, "width": self.width, "height": self.height, "mode": self.mode}

    def part(self) -> dict:
        """The image as an OpenAI content part."""
        return {"type": "image_url", "image_url": {"url": self.data_url()}}

    def pil(self):
        from PIL import Image as PILImage

        return PILImage.open(io.BytesIO(self.png)).convert("RGB")


def as_image(obj, name: str = "the image") -> Image:
    """`obj` as an Image, or one line saying what is wrong with it and what to give instead."""
    if isinstance(obj, Image):
        return obj
    pil = _to_pil(obj, name)
    w, h = pil.size
    _check_size(w, h, name)
    rgb, mode = _rgb(pil, name)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    png = buf.getvalue()
    return Image(png, w, h, mode, hashlib.sha256(png).hexdigest())


def as_images(items, what: str = "images") -> list[Image]:
    """A list (or one) of image-like objects as Images; each error names which one it is."""
    if items is None:
        return []
    if not isinstance(items, (list, tuple)):
        items = [items]
    return [as_image(x, f"image {i} of {what}" if len(items) > 1 else "the image") for i, x in enumerate(items)]


def from_url(url: str, name: str = "the image") -> Image:
    """An image_url part's URL (a data: URL) as an Image; local engines fetch nothing."""
    if not url.startswith("data:"):
        raise VllamaError(f"{name} is a URL ({url[:40]}…): a local engine fetches nothing, give a data: URL "
                          "(data:image/png;base64,…), a file path with --image, or the image itself")
    return as_image(url, name)


def _to_pil(obj, name: str):
    from PIL import Image as PILImage, UnidentifiedImageError

    if isinstance(obj, PILImage.Image):
        return obj
    if hasattr(obj, "savefig") or (hasattr(obj, "get_figure") and hasattr(obj, "plot")):
        fig = obj if hasattr(obj, "savefig") else obj.get_figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=FIG_DPI)
        obj = buf.getvalue()
    elif type(obj).__module__.startswith("IPython.") and isinstance(getattr(obj, "data", None), bytes):
        obj = obj.data   # IPython.display.Image
    elif type(obj).__module__ == "numpy":
        return _from_array(obj, name)
    data = _bytes_of(obj, name)
    if not data:
        raise VllamaError(f"{name} is empty (0 bytes): give the bytes of a PNG or JPEG file")
    try:
        with warnings.catch_warnings():   # PIL's own size guard warns, then refuses: our line says it
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            img = PILImage.open(io.BytesIO(data))
        _check_size(*img.size, name)   # before the pixels are decoded
        img.load()
    except PILImage.DecompressionBombError:
        raise VllamaError(f"{name} is more than the {MAX_PIXELS // 1_000_000} megapixels vllama takes: "
                          "shrink it first, e.g. img.thumbnail((2048, 2048))") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise VllamaError(f"{name} could not be read as an image ({_short(e)}): give a PNG or JPEG file, "
                          "a PIL image, a numpy array or a matplotlib figure") from None
    return img


def _check_size(w: int, h: int, name: str) -> None:
    if w == 0 or h == 0:
        raise VllamaError(f"{name} is {w}×{h} pixels: it is empty, give an image with pixels in it")
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise VllamaError(f"{name} is {w}×{h} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels (or "
                          f"{MAX_SIDE} on a side) vllama takes: shrink it first, e.g. img.thumbnail((2048, 2048))")


def _bytes_of(obj, name: str) -> bytes:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, str) and obj.startswith("data:"):
        head, _, body = obj.partition(",")
        if not head.startswith("data:image/") or not head.endswith(";base64"):
            raise VllamaError(f"{name} is a data: URL that is not a base64 image: give data:image/png;base64,…")
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise VllamaError(f"{name} is a data: URL whose base64 is broken: encode the file again") from None
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.isfile(path):
            raise VllamaError(f"{name}: no image file at {path!r}: give a path to a PNG or JPEG file, "
                              "or a variable holding the image")
        with open(path, "rb") as f:
            return f.read()
    raise VllamaError(f"{name} is a {type(obj).__name__}: give a matplotlib figure, a PIL image, a numpy array, "
                      "PNG/JPEG bytes or a file path")


def _from_array(a, name: str):
    import numpy as np
    from PIL import Image as PILImage

    if not isinstance(a, np.ndarray):
        raise VllamaError(f"{name} is a numpy {type(a).__name__}: give an array H×W or H×W×3")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise VllamaError(f"{name} is an array of shape {a.shape}: an image is H×W (grey), H×W×3 (RGB) "
                          "or H×W×4 (RGBA)")
    if a.size == 0:
        raise VllamaError(f"{name} is an array of shape {a.shape}: it is empty, give an image with pixels in it")
    _check_size(a.shape[1], a.shape[0], name)
    if a.dtype == np.uint8:
        pixels = a
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise VllamaError(f"{name} is a float array with values outside [0, 1] (or NaN): scale it to [0, 1], "
                              "or give uint8 values 0-255")
        pixels = (a * 255).round().astype(np.uint8)
    else:
        raise VllamaError(f"{name} is an array of {a.dtype}: give uint8 (0-255) or floats in [0, 1]")
    return PILImage.fromarray(np.ascontiguousarray(pixels))


def _rgb(img, name: str):
    """The image as RGB, and the mode to record for it."""
    from PIL import Image as PILImage

    if img.mode == "RGB":
        return img, "RGB"
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:   # opaque (a figure's PNG): nothing to say
            return rgba.convert("RGB"), "RGB"
        out = PILImage.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        notice(f"{name} has transparency ({img.mode}): shown to the model as RGB on white")
        return out, img.mode
    notice(f"{name} is {img.mode}: shown to the model converted to RGB")
    return img.convert("RGB"), img.mode


def _short(e: Exception) -> str:
    return str(e).split("\n")[0][:80] or type(e).__name__


def in_messages(messages: list[dict]) -> list[Image]:
    """The images of checked messages, in order (each decoded from its data: URL)."""
    from .messages import image_urls

    return [from_url(u, f"image {i} of the messages") for i, u in enumerate(image_urls(messages))]
