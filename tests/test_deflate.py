"""The PNG encoder's deflate step (libdeflate): every output decodes, with Pillow, to exactly the
pixels it was given, for grey, RGB and RGBA and odd sizes, and encoder_info names what makes the
bytes."""

from __future__ import annotations

import io
import zlib
from importlib.metadata import version

import numpy as np
import pytest
from PIL import Image

from pipeline.publish import schema
from pipeline.publish.schema import PNG_LEVEL, encode_png, encode_pngs, encoder_info

SHAPES = [(1, 1, 1), (1, 1, 3), (1, 13, 1), (13, 1, 3), (7, 9, 1), (8, 8, 1), (28, 28, 1), (32, 32, 1),
          (32, 32, 3), (31, 33, 3), (5, 6, 4), (64, 17, 3)]


def _batch(shape: tuple[int, int, int], n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w, c = shape
    smooth = np.linspace(0, 255, h * w * c).reshape(h, w, c).astype(np.uint8)
    b = np.stack([rng.integers(0, 256, shape, dtype=np.uint8), smooth,
                  np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8),  # extremes: the Sub filter wraps
                  np.clip(smooth.astype(np.int16) + rng.integers(-3, 4, shape), 0, 255).astype(np.uint8),
                  rng.integers(0, 2, shape, dtype=np.uint8) * 255][:n])
    return b


def _pil(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    img.load()
    a = np.asarray(img)
    return a[:, :, None] if a.ndim == 2 else a


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_png_decodes_to_its_pixels(shape):
    batch = _batch(shape)
    pngs = encode_pngs(batch)
    assert len(pngs) == len(batch)
    for png, a in zip(pngs, batch, strict=True):
        assert isinstance(png, bytes)
        img = Image.open(io.BytesIO(png))
        assert img.mode == {1: "L", 3: "RGB", 4: "RGBA"}[shape[2]] and img.size == (shape[1], shape[0])
        assert np.array_equal(_pil(png), a)
        assert png == encode_png(a) == encode_png(a.copy())  # batch == single, same pixels -> same bytes
    assert encode_pngs(batch, workers=2) == pngs  # threads (libdeflate releases the GIL): same bytes


@pytest.mark.parametrize("level", [0, 1, PNG_LEVEL, 6, 12])
def test_every_level_decodes_to_its_pixels(level):
    batch = np.concatenate([_batch((32, 32, 3)), _batch((32, 32, 3), seed=1)])
    for png, a in zip(encode_pngs(batch, level), batch, strict=True):
        assert np.array_equal(_pil(png), a)


def test_grey_2d_input_and_bad_inputs():
    a = _batch((9, 7, 1))[1][:, :, 0]
    assert encode_png(a) == encode_png(a[:, :, None])
    assert np.array_equal(_pil(encode_png(a))[:, :, 0], a)
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 1), np.uint8), np.zeros((4, 4, 1), np.float32)):
        with pytest.raises(ValueError):
            encode_png(bad)
        with pytest.raises(ValueError):
            encode_pngs(bad[None])
    with pytest.raises(ValueError, match="0..12"):
        encode_png(np.zeros((4, 4, 1), np.uint8), level=13)
    assert encode_pngs(np.zeros((0, 4, 4, 1), np.uint8)) == []


def test_the_idat_stream_is_libdeflate_at_the_shipped_level():
    import deflate

    a = _batch((32, 32, 1))[4]
    png = encode_png(a)
    n = int.from_bytes(png[33:37], "big")
    assert png[37:41] == b"IDAT"
    stream = png[41:41 + n]
    raw = zlib.decompress(stream)  # a plain zlib stream: any inflater reads it
    assert len(raw) == 32 * 33 and raw[::33] == b"\x01" * 32  # one Sub filter byte per row
    assert stream == bytes(deflate.zlib_compress(raw, PNG_LEVEL))


def test_encoder_info_names_the_library_version_and_level():
    info = encoder_info()
    assert info["png_deflate"] == "libdeflate"
    assert info["version"] == version("deflate")
    assert info["level"] == PNG_LEVEL == schema.PNG_LEVEL
    assert set(info) == {"png_deflate", "version", "libdeflate", "level"}
    assert info["libdeflate"] is None or info["libdeflate"].count(".") == 1
    import json

    assert json.loads(json.dumps(info)) == info  # goes into the manifest as is
