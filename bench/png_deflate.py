"""PNG deflate benchmark: zlib level 1 (the old encoder) against libdeflate (PyPI ``deflate``)
levels 1-6 and ISA-L (PyPI ``isal``) levels 1-3, inside the pipeline's own PNG container and
batch-wide ``Sub`` filter (``pipeline.publish.schema._png_batch``), beside Pillow's PNG encoder.

    python bench/png_deflate.py                 # writes bench/results/deflate-cpu.json
    python bench/png_deflate.py --quick --out /tmp/d.json

Images (realistic, not noise): scikit-learn's 1,797 digits, 0..16 scaled to 0..255 --
``digits8_grey`` as they are (the digits demo's size), ``digits32_grey`` upscaled bilinearly to
32x32 (smooth, like a trained generator's output), ``digits32_rgb`` the same tinted per image
from a random background to a random foreground colour; each 32x32 case also ``_noisy``, with
rounded Gaussian noise of sigma 3 grey levels added (generated images carry some texture; a
clean bilinear upscale is the most compressible extreme).

Per case and codec: the best of ``--reps`` interleaved passes over the whole batch on one core
(this thread's CPU time)
(images/s of the whole encode, and of the deflate step alone), the mean PNG size, and the ratios
against zlib level 1 measured in the same pass. Every output of every codec is decoded with
Pillow and compared with its source pixels. Then the shipped encoder
(``pipeline.publish.schema.encode_pngs``) against Pillow's default PNG save.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.records import load_avg, machine, write_json  # noqa: E402
from pipeline.publish import schema  # noqa: E402


def clock() -> float:
    """CPU time of this thread: the encoder runs on one core, and on a shared machine the wall
    clock mostly measures the neighbours (CPU time is far steadier under load)."""
    return time.thread_time()


def cases(n_max: int | None = None) -> dict[str, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits().images
    g8 = np.clip(np.rint(d * 255 / 16), 0, 255).astype(np.uint8)
    if n_max:
        g8 = g8[:n_max]
    g32 = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR)) for a in g8])
    rng = np.random.default_rng(0)
    fg = rng.integers(0, 256, (len(g32), 1, 1, 3))
    bg = rng.integers(0, 256, (len(g32), 1, 1, 3))
    t = g32[..., None].astype(np.float32) / 255
    rgb = np.clip(np.rint(bg * (1 - t) + fg * t), 0, 255).astype(np.uint8)

    def noisy(a: np.ndarray) -> np.ndarray:
        n = np.rint(rng.normal(0, 3, a.shape)).astype(np.int16)
        return np.clip(a.astype(np.int16) + n, 0, 255).astype(np.uint8)

    return {"digits8_grey": g8[..., None], "digits32_grey": g32[..., None],
            "digits32_grey_noisy": noisy(g32)[..., None], "digits32_rgb": rgb, "digits32_rgb_noisy": noisy(rgb)}


def codecs() -> dict[str, tuple[str, int, object]]:
    import deflate
    from isal import isal_zlib

    out: dict[str, tuple[str, int, object]] = {"zlib-1": ("zlib", 1, lambda b: zlib.compress(b, 1))}
    for lv in range(1, 7):
        out[f"libdeflate-{lv}"] = ("libdeflate", lv, lambda b, lv=lv: deflate.zlib_compress(b, lv))
    for lv in range(1, 4):  # ISA-L's levels are 0..3; 0 is Huffman-mostly (+50% size here)
        out[f"isal-{lv}"] = ("isal", lv, lambda b, lv=lv: isal_zlib.compress(b, lv))
    return out


def pil_png(a: np.ndarray) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(b, format="PNG")  # Pillow default (zlib 6)
    return b.getvalue()


def pixels_ok(pngs: list[bytes], imgs: np.ndarray) -> bool:
    return all(np.array_equal(schema.decode_png(p), a) for p, a in zip(pngs, imgs, strict=True))


def filtered(a: np.ndarray) -> list[bytes]:
    n, h, w, c = a.shape
    rows = a.reshape(n, h, w * c)
    raw = np.empty((n, h, w * c + 1), np.uint8)
    raw[:, :, 0] = 1
    raw[:, :, 1:c + 1] = rows[:, :, :c]
    np.subtract(rows[:, :, c:], rows[:, :, :-c], out=raw[:, :, c + 1:])
    return [r.tobytes() for r in raw]


def bench_case(imgs: np.ndarray, reps: int) -> dict:
    cs = codecs()
    raws = filtered(imgs)
    enc = {k: float("inf") for k in cs}
    dfl = {k: float("inf") for k in cs}
    out: dict[str, list[bytes]] = {}
    for _ in range(reps):  # interleaved: load drifts hit every codec alike
        for k, (_, _, f) in cs.items():
            t = clock()
            out[k] = schema._png_batch(imgs, f)
            enc[k] = min(enc[k], clock() - t)
            t = clock()
            for r in raws:
                f(r)
            dfl[k] = min(dfl[k], clock() - t)
    n = len(imgs)
    z_enc, z_dfl, z_size = enc["zlib-1"], dfl["zlib-1"], sum(map(len, out["zlib-1"]))
    res = {}
    for k, (lib, lv, _) in cs.items():
        size = sum(map(len, out[k]))
        res[k] = {"library": lib, "level": lv, "img_per_s": round(n / enc[k]), "deflate_only_img_per_s": round(n / dfl[k]),
                  "speed_vs_zlib1": round(z_enc / enc[k], 3), "deflate_only_speed_vs_zlib1": round(z_dfl / dfl[k], 3),
                  "mean_bytes": round(size / n, 1), "size_vs_zlib1": round(size / z_size, 4),
                  "pixels_identical": pixels_ok(out[k], imgs)}
    return res


def vs_pil(imgs: np.ndarray, reps: int) -> dict:
    """The shipped encoder (``encode_pngs`` as build_table calls it) and the old one (same
    container, zlib level 1) against Pillow's default PNG save (adaptive filters, zlib level 6)."""
    fs = {"ours": schema.encode_pngs, "old_zlib1": lambda x: schema._png_batch(x, lambda b: zlib.compress(b, 1)),
          "pil": lambda x: [pil_png(a) for a in x]}
    best = {k: float("inf") for k in fs}
    out: dict[str, list[bytes]] = {}
    for _ in range(reps):
        for k, f in fs.items():
            t = clock()
            out[k] = f(imgs)
            best[k] = min(best[k], clock() - t)
    n = len(imgs)
    size = {k: sum(map(len, v)) for k, v in out.items()}
    return {"ours_img_per_s": round(n / best["ours"]), "old_zlib1_img_per_s": round(n / best["old_zlib1"]),
            "pil_img_per_s": round(n / best["pil"]),
            "speed_vs_pil": round(best["pil"] / best["ours"], 3), "size_vs_pil": round(size["ours"] / size["pil"], 4),
            "old_speed_vs_pil": round(best["pil"] / best["old_zlib1"], 3),
            "old_size_vs_pil": round(size["old_zlib1"] / size["pil"], 4),
            "ours_mean_bytes": round(size["ours"] / n, 1), "pil_mean_bytes": round(size["pil"] / n, 1),
            "pixels_identical": all(pixels_ok(v, imgs) for v in out.values())}


def versions() -> dict:
    import deflate
    import isal
    import PIL

    return {"python": platform.python_version(), "numpy": np.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION,
            "deflate": deflate.__version__, "libdeflate (bundled)": schema.encoder_info().get("libdeflate"),
            "isal": isal.__version__, "isa-l": getattr(isal, "ISAL_VERSION", None), "pillow": PIL.__version__}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="300 images, 2 reps; records nothing unless --out")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    reps = 2 if args.quick else args.reps
    data = cases(300 if args.quick else None)
    rec: dict = {"bench": "deflate", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "machine": machine(),
                 "versions": versions(), "shipped": schema.encoder_info(), "reps": reps,
                 "timing": "best of reps of this thread's CPU time (time.thread_time), one core, codecs interleaved; whole encode = filter + container + deflate",
                 "images": {k: list(v.shape) for k, v in data.items()}, "cases": {}, "vs_pil": {}}
    for name, imgs in data.items():
        rec["cases"][name] = bench_case(imgs, reps)
        rec["vs_pil"][name] = vs_pil(imgs, reps)
        row = {k: (v["speed_vs_zlib1"], v["size_vs_zlib1"]) for k, v in rec["cases"][name].items()}
        print(name, json.dumps(row), "vs PIL:", json.dumps(rec["vs_pil"][name]), flush=True)
    rec["machine"]["load_avg_after"] = load_avg()
    rec["all_pixels_identical"] = all(v["pixels_identical"] for c in rec["cases"].values() for v in c.values()) and all(
        v["pixels_identical"] for v in rec["vs_pil"].values())
    print("all pixels identical:", rec["all_pixels_identical"])
    if args.quick and not args.out:
        return
    write_json(Path(args.out or ROOT / "bench" / "results" / "deflate-cpu.json"), rec)


if __name__ == "__main__":
    main()
