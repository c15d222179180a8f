"""Dataset sources load real files in each dataset's own format, written here from sklearn's digits.

Nothing is downloaded: MNIST / Fashion-MNIST idx files and CIFAR-10 pickles are written in the
layout torchvision reads and loaded by torchvision's own classes; image folders of PNGs and
Parquet datasets are read locally and from a real S3 endpoint on loopback (moto's server).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.data import DataError, load_dataset
from pipeline.data.base import to_u8_hwc
from pipeline.data.folder import load_image_folder
from pipeline.data.parquet_source import load_parquet_dataset
from pipeline.spec import DatasetSpec

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_TRAIN = 1500  # of sklearn's 1,797 digits; the rest is the source's own test split


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 images and int labels of the bundled digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.clip(d.images * 16, 0, 255).astype(np.uint8), d.target.astype(np.int64)


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(images).float()[:, None]
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def write_idx(path: Path, arr: np.ndarray) -> None:
    """The idx (SN3 Pascal Vincent) format of MNIST: magic 0x0000 08 <ndim>, big-endian dims, uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def write_mnist(root: Path, folder: str, images: np.ndarray, labels: np.ndarray) -> Path:
    raw = root / folder / "raw"
    x = upscale(images, 28)
    write_idx(raw / "train-images-idx3-ubyte", x[:N_TRAIN])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:N_TRAIN])
    write_idx(raw / "t10k-images-idx3-ubyte", x[N_TRAIN:])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[N_TRAIN:])
    return raw


def colorize(images: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: the digits upscaled, tinted by class so colour carries signal."""
    g = upscale(images, size).astype(np.float32) / 255.0
    tint = np.stack([np.linspace(0.3, 1.0, 10), np.linspace(1.0, 0.3, 10), np.full(10, 0.6)], 1)[labels]
    return (g[..., None] * tint[:, None, None, :] * 255).round().astype(np.uint8)


def write_cifar(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """CIFAR-10's python pickles: data_batch_1..5, test_batch ((N, 3072) uint8 CHW rows), batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rgb = colorize(images, labels, 32)
    rows = rgb.transpose(0, 3, 1, 2).reshape(len(rgb), -1)
    chunks = np.array_split(np.arange(N_TRAIN), 5)
    for i, idx in enumerate(chunks, 1):
        batch = {"batch_label": f"training batch {i} of 5", "data": rows[idx],
                 "labels": labels[idx].tolist(), "filenames": [f"{j}.png" for j in idx]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {"batch_label": "testing batch 1 of 1", "data": rows[N_TRAIN:], "labels": labels[N_TRAIN:].tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": len(chunks[0]), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def register_cifar_md5s(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Put the md5s of the files written here into torchvision's table of official md5s.

    torchvision then runs its real integrity check (and genpipe keeps it on: it is what stops
    an arbitrary pickle from being unpickled), against these files instead of the release's.
    """
    from torchvision.datasets import CIFAR10

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5(f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5(f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", dict(CIFAR10.meta, md5=md5(CIFAR10.meta["filename"])))


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    for i, (a, y) in enumerate(zip(images, labels, strict=True)):
        d = root / names[y] / ("sub" if i % 3 == 0 else "")  # nested files count too
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{i:04d}.png").write_bytes(png_bytes(a))


def assert_normalised(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32 and x.min() >= -1.0 and x.max() <= 1.0


# ------------------------------------------------------------------------------------ torchvision: MNIST


@pytest.mark.parametrize(("source", "folder", "first_class"),
                         [("mnist", "MNIST", "0 - zero"), ("fashion_mnist", "FashionMNIST", "T-shirt/top")])
def test_mnist_idx_files_load_through_torchvision(tmp_path, digits, source, folder, first_class):
    images, labels = digits
    write_mnist(tmp_path, folder, images, labels)
    ds = load_dataset(DatasetSpec(source=source, path=str(tmp_path)))
    assert ds.image_shape == (1, 28, 28)
    assert len(ds.train_y) == N_TRAIN and len(ds.test_y) == len(labels) - N_TRAIN  # the dataset's own split
    assert ds.class_names[0] == first_class and ds.num_classes == 10
    assert torch.equal(ds.test_y, torch.from_numpy(labels[N_TRAIN:]))
    assert_normalised(ds.train_x)
    np.testing.assert_array_equal(ds.train_u8()[..., 0], upscale(images, 28)[:N_TRAIN])


def test_mnist_resized_to_rgb_32(tmp_path, digits):
    write_mnist(tmp_path, "MNIST", *digits)
    # download: true with the files in place reads them (torchvision checks before fetching)
    ds = load_dataset(DatasetSpec(source="mnist", path=str(tmp_path), channels=3, image_size=32, download=True))
    assert ds.image_shape == (3, 32, 32)
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])


def test_mnist_corrupt_idx_file_is_named(tmp_path, digits):
    raw = write_mnist(tmp_path, "MNIST", *digits)
    bad = raw / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + bad.read_bytes()[4:])  # wrong magic number
    with pytest.raises(DataError, match=str(bad)):
        load_dataset(DatasetSpec(source="mnist", path=str(tmp_path)))


@pytest.mark.parametrize(("source", "folder"), [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_files_say_where_and_how_to_fix(tmp_path, source, folder):
    with pytest.raises(DataError) as e:
        load_dataset(DatasetSpec(source=source, path=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere" / folder) in str(e.value) and "download: true" in str(e.value)


# -------------------------------------------------------------------------------- torchvision: CIFAR-10


def test_cifar10_pickles_load_through_torchvision(tmp_path, digits, monkeypatch):
    images, labels = digits
    register_cifar_md5s(monkeypatch, write_cifar(tmp_path, images, labels))
    ds = load_dataset(DatasetSpec(source="cifar10", path=str(tmp_path)))
    assert ds.image_shape == (3, 32, 32)
    assert ds.class_names == CIFAR_CLASSES  # from batches.meta, through torchvision's .classes
    assert len(ds.train_y) == N_TRAIN and len(ds.test_y) == len(labels) - N_TRAIN
    np.testing.assert_array_equal(ds.test_u8(), colorize(images, labels, 32)[N_TRAIN:])
    assert_normalised(ds.test_x)


def test_cifar10_files_that_fail_the_official_md5_are_named(tmp_path, digits):
    folder = write_cifar(tmp_path, *digits)  # md5s not registered: torchvision's real table applies
    with pytest.raises(DataError, match=f"{folder / 'data_batch_1'}.*md5"):
        load_dataset(DatasetSpec(source="cifar10", path=str(tmp_path)))


def test_cifar10_unreadable_pickle_is_named(tmp_path, digits, monkeypatch):
    folder = write_cifar(tmp_path, *digits)
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    register_cifar_md5s(monkeypatch, folder)
    with pytest.raises(DataError, match=str(folder / "data_batch_3")):
        load_dataset(DatasetSpec(source="cifar10", path=str(tmp_path)))


# -------------------------------------------------------------------------------------- image_folder


@pytest.fixture
def small(digits) -> tuple[np.ndarray, np.ndarray]:
    """120 digits of classes 0-2 upscaled to 16x16 (keeps PNG writing fast)."""
    images, labels = digits
    keep = np.flatnonzero(labels < 3)[:120]
    return upscale(images[keep], 16), labels[keep]


def test_image_folder_grayscale_pngs(tmp_path, small):
    images, labels = small
    write_folder(tmp_path, images, labels, ["zero", "one", "two"])
    (tmp_path / "one" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    ds = load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path), test_fraction=0.25))
    assert ds.class_names == ["one", "two", "zero"]  # sorted folder names, as ImageFolder
    assert ds.image_shape == (1, 16, 16)
    assert len(ds.train_y) + len(ds.test_y) == len(labels)
    got = sorted(map(bytes, np.concatenate([ds.train_u8(), ds.test_u8()])[..., 0]))
    assert got == sorted(map(bytes, images))


def test_image_folder_rgb_and_mixed_modes(tmp_path, small):
    images, labels = small
    rgb = colorize(images, labels, 16)
    names = ["a", "b", "c"]
    write_folder(tmp_path / "rgb", rgb, labels, names)
    ds = load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path / "rgb")))
    assert ds.image_shape == (3, 16, 16)
    mixed = [rgb[i] if i % 2 else images[i] for i in range(len(labels))]
    for i, (a, y) in enumerate(zip(mixed, labels, strict=True)):
        (tmp_path / "mixed" / names[y]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "mixed" / names[y] / f"{i}.png").write_bytes(png_bytes(a))
    assert load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path / "mixed"))).image_shape == (3, 16, 16)
    gray = load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path / "rgb"), channels=1))
    assert gray.image_shape == (1, 16, 16)


def test_image_folder_sizes_must_match_unless_resized(tmp_path, small):
    images, labels = small
    write_folder(tmp_path, images[:30], labels[:30], ["a", "b", "c"])
    odd = tmp_path / "b" / "odd.png"
    odd.write_bytes(png_bytes(upscale(images[:1], 20)[0]))
    with pytest.raises(DataError, match=r"odd\.png.*20x20.*dataset\.image_size"):
        load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path)))
    ds = load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path), image_size=32))
    assert ds.image_shape == (1, 32, 32) and len(ds.train_y) + len(ds.test_y) == 31


def test_image_folder_truncated_png_is_named(tmp_path, small):
    images, labels = small
    write_folder(tmp_path, images[:12], labels[:12], ["a", "b", "c"])
    bad = tmp_path / "c" / "broken.png"
    data = png_bytes(images[0])
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(bad)):
        load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path)))


def test_image_folder_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}.*does not exist"):
        load_dataset(DatasetSpec(source="image_folder", path=str(tmp_path / "missing")))


# ------------------------------------------------------------------------------------------- parquet


HF_META = {"info": {"features": {"image": {"_type": "Image"},
                                 "label": {"names": ["zero", "one", "two"], "_type": "ClassLabel"}}}}


def hf_table(images: np.ndarray, labels: np.ndarray, meta: dict | None = HF_META) -> pa.Table:
    """genpipe's / Hugging Face's layout: image struct<bytes: binary, path: string> + int64 label."""
    image = pa.array([{"bytes": png_bytes(a), "path": None} for a in images],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    t = pa.table({"id": pa.array([f"row-{i}" for i in range(len(labels))]), "image": image,
                  "label": pa.array(labels, pa.int64()), "seed": pa.array(np.arange(len(labels)), pa.int64())})
    return t.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()} if meta else None)


def write_published_layout(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Two shards in a date partition, a manifest, and a leftover staging file (as genpipe publishes)."""
    part = root / "date=2024-06-01"
    part.mkdir(parents=True)
    halves = np.array_split(np.arange(len(labels)), 2)
    for i, idx in enumerate(halves):
        pq.write_table(hf_table(images[idx], labels[idx]), part / f"part-{i:05d}-of-00002.parquet")
    (root / "manifest.json").write_text(json.dumps({"files": ["date=2024-06-01/part-00000-of-00002.parquet"]}))
    (part / ".staging").mkdir()
    (part / ".staging" / "part-00001-of-00002.parquet").write_bytes(b"partial")
    return part


def test_parquet_published_layout_round_trip(tmp_path, small):
    images, labels = small
    part = write_published_layout(tmp_path, images, labels)
    for path in (tmp_path, part / "part-*.parquet", tmp_path / "date=*" / "*.parquet"):
        ds = load_dataset(DatasetSpec(source="parquet", path=str(path)))
        assert ds.class_names == ["zero", "one", "two"]  # ClassLabel names from the metadata
        assert ds.image_shape == (1, 16, 16) and len(ds.train_y) + len(ds.test_y) == len(labels)
    all_y = torch.cat([ds.train_y, ds.test_y]).sort().values
    assert torch.equal(all_y, torch.from_numpy(np.sort(labels)))


def test_parquet_written_by_hugging_face_datasets(tmp_path, small):
    datasets = pytest.importorskip("datasets")
    images, labels = small
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["zero", "one", "two"])})
    hf = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": labels.tolist()},
                                    features=features)
    hf.to_parquet(str(tmp_path / "train.parquet"))
    ds = load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "train.parquet"), split_seed=3))
    assert ds.class_names == ["zero", "one", "two"] and ds.image_shape == (1, 16, 16)


def test_parquet_plain_bytes_string_and_int_labels(tmp_path, small):
    images, labels = small
    rgb = colorize(images, labels, 16)
    names = np.array(["cat", "dog", "ant"])[labels]
    pq.write_table(pa.table({"png": pa.array([png_bytes(a) for a in rgb], pa.binary()), "kind": names}),
                   tmp_path / "d.parquet")
    ds = load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "d.parquet"), image_column="png",
                                  label_column="kind"))
    assert ds.class_names == ["ant", "cat", "dog"] and ds.image_shape == (3, 16, 16)
    pq.write_table(hf_table(images, labels + 5, meta=None), tmp_path / "ints.parquet")  # no ClassLabel names
    ds = load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "ints.parquet")))
    assert ds.class_names == ["5", "6", "7"]


def test_parquet_errors_name_the_file(tmp_path, small):
    images, labels = small
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=str(tmp_path / "bad" / "x.parquet")):
        load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "bad")))
    t = hf_table(images[:4], labels[:4])
    pq.write_table(t, tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols\.parquet.*no column 'img'"):
        load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "cols.parquet"), image_column="img"))
    cut = png_bytes(images[1])[:40]
    image = pa.array([{"bytes": png_bytes(images[0]), "path": None}, {"bytes": cut, "path": None}],
                     type=t.schema.field("image").type)
    pq.write_table(pa.table({"image": image, "label": [0, 1]}), tmp_path / "trunc.parquet")
    with pytest.raises(DataError, match=r"trunc\.parquet row 1: cannot decode"):
        load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "trunc.parquet")))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(DatasetSpec(source="parquet", path=str(tmp_path / "absent")))


# ------------------------------------------------------------------------------------- object storage


@pytest.fixture(scope="module")
def s3():
    """A real S3 HTTP endpoint on loopback (moto's server) with one bucket; yields storage_options."""
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    fs.mkdir("genpipe-test")
    try:
        yield opts
    finally:
        server.stop()


def test_image_folder_on_s3(tmp_path, small, s3):
    import s3fs

    images, labels = small
    write_folder(tmp_path, colorize(images, labels, 16), labels, ["x", "y", "z"])
    fs = s3fs.S3FileSystem(**s3)
    fs.put(str(tmp_path) + "/", "genpipe-test/imgs/", recursive=True)
    spec = DatasetSpec(source="image_folder", path="s3://genpipe-test/imgs")
    ds = load_image_folder(spec, storage_options=s3)
    assert ds.class_names == ["x", "y", "z"] and ds.image_shape == (3, 16, 16)
    assert len(ds.train_y) + len(ds.test_y) == len(labels)
    fs.pipe("genpipe-test/imgs/y/broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match=r"s3://genpipe-test/imgs/y/broken\.png"):
        load_image_folder(spec, storage_options=s3)
    with pytest.raises(DataError, match=r"s3://genpipe-test/nothing"):
        load_image_folder(DatasetSpec(source="image_folder", path="s3://genpipe-test/nothing"), storage_options=s3)


def test_parquet_on_s3(tmp_path, small, s3):
    import s3fs

    images, labels = small
    write_published_layout(tmp_path / "pub", images, labels)
    fs = s3fs.S3FileSystem(**s3)
    fs.put(str(tmp_path / "pub") + "/", "genpipe-test/pub/", recursive=True)
    ds = load_parquet_dataset(DatasetSpec(source="parquet", path="s3://genpipe-test/pub"), storage_options=s3)
    assert ds.class_names == ["zero", "one", "two"] and len(ds.train_y) + len(ds.test_y) == len(labels)


# ------------------------------------------------------------------------------------------ streaming


@pytest.mark.ray
def test_a_streamed_dataset_unpickles_without_torch(tmp_path, small, ray_cluster):
    """Ray Train's controller (its datasets callback) and Ray Data's decode workers unpickle a
    streamed dataset, decode step included; none of them touches a tensor, so that must not
    import torch (~2 s of a fresh process: 2.03 s against 0.81 s measured). The in-memory
    dataset beside it does, so the check can see the import it guards against."""
    import subprocess
    import sys

    import cloudpickle

    from pipeline.data.streaming import streaming_dataset

    images, labels = small
    write_folder(tmp_path / "imgs", images, labels, ["zero", "one", "two"])
    write_published_layout(tmp_path / "pub", images, labels)
    blobs = []
    for spec in (DatasetSpec(source="image_folder", path=str(tmp_path / "imgs"), channels=3, image_size=32),
                 DatasetSpec(source="parquet", path=str(tmp_path / "pub"), channels=3, image_size=32)):
        sd = streaming_dataset(spec)
        blobs.append(cloudpickle.dumps((sd.train, sd.test)))
    blobs.append(cloudpickle.dumps(load_dataset(DatasetSpec(source="digits"))))
    check = ("import pickle, sys\n"
             "pickle.loads(sys.stdin.buffer.read())\n"
             "print('torch' in sys.modules)\n")

    def imports_torch(blob):
        out = subprocess.run([sys.executable, "-c", check], input=blob, capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode().strip() == "True"

    assert [imports_torch(b) for b in blobs] == [False, False, True]


@pytest.mark.ray
def test_streaming_image_folder_and_parquet(tmp_path, small, ray_cluster):
    from pipeline.data.streaming import streaming_dataset, to_tensors

    images, labels = small
    write_folder(tmp_path / "imgs", images, labels, ["zero", "one", "two"])
    write_published_layout(tmp_path / "pub", images, labels)
    for spec in (DatasetSpec(source="image_folder", path=str(tmp_path / "imgs"), channels=3, image_size=32),
                 DatasetSpec(source="parquet", path=str(tmp_path / "pub"), channels=3, image_size=32)):
        sd = streaming_dataset(spec)
        assert sd.image_shape == (3, 32, 32) and sd.num_classes == 3
        batches = list(sd.train.iter_torch_batches(batch_size=32))
        x = torch.cat([b["image"] for b in batches])
        y = torch.cat([b["label"] for b in batches])
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 32, 32)
        assert_normalised(x)
        tx, ty = to_tensors(sd.test)
        assert len(y) + len(ty) == len(labels) and 0 < len(ty) < len(labels) // 2
        # same content as the in-memory path: every streamed image is one of the dataset's images
        full = load_dataset(spec)
        ref = {bytes(a) for a in np.concatenate([full.train_u8(), full.test_u8()])}
        assert all(bytes(a) in ref for a in to_u8_hwc(torch.cat([x, tx])))
        names = sd.class_names
        assert sorted(names[i] for i in torch.cat([y, ty]).tolist()) == sorted(
            ["zero", "one", "two"][i] for i in labels)



@pytest.mark.ray
def test_streaming_from_s3(tmp_path, small, s3, ray_cluster):
    import s3fs

    from pipeline.data.streaming import streaming_dataset, to_tensors

    images, labels = small
    write_folder(tmp_path / "imgs", images, labels, ["zero", "one", "two"])
    s3fs.S3FileSystem(**s3).put(str(tmp_path / "imgs") + "/", "genpipe-test/stream/", recursive=True)
    sd = streaming_dataset(DatasetSpec(source="image_folder", path="s3://genpipe-test/stream"), storage_options=s3)
    (x, y), (tx, ty) = to_tensors(sd.train), to_tensors(sd.test)
    assert x.shape[1:] == tx.shape[1:] == (1, 16, 16) and len(y) + len(ty) == len(labels)
    assert sorted(sd.class_names[i] for i in torch.cat([y, ty]).tolist()) == sorted(
        ["zero", "one", "two"][i] for i in labels)


def test_bundled_digits_are_load_digits_own_arrays_read_without_importing_sklearn():
    """The digits loader reads scikit-learn's bundled file itself: the same arrays (so the same
    dataset digest and caches), and a fresh interpreter that loads them has not imported sklearn."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from pipeline.data.digits import bundled_digits

    images, target = bundled_digits()
    ref = load_digits()
    assert images.dtype == ref.images.dtype and images.shape == ref.images.shape == (1797, 8, 8)
    assert images.tobytes() == ref.images.tobytes()
    assert np.array_equal(target, ref.target) and target.dtype.kind == "i"
    code = ("import sys; from pipeline.data.digits import bundled_digits; n = len(bundled_digits()[0]); "
            "print(n, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1797", "False"]
