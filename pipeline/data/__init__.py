"""Dataset sources, picked by name: :func:`load_dataset` registers every source on its first call
(a source module also registers itself when imported).

- ``digits``: scikit-learn's bundled handwritten digits (default, offline);
- ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's datasets (:mod:`.torchvision_sources`);
- ``image_folder``: one sub-folder per class, local or object storage (:mod:`.folder`);
- ``parquet``: Hugging Face ``Image``-layout or plain-bytes Parquet, incl. genpipe's own output
  (:mod:`.parquet_source`).

:mod:`.streaming` builds Ray Data datasets for the file-backed sources (larger than memory).
Importing this package, :mod:`.base`, :mod:`.folder`, :mod:`.parquet_source` or :mod:`.streaming`
imports no torch: a streamed job's decode step is unpickled in Ray Data's workers and in Ray
Train's controller, which never touch a tensor (``tests/test_data_sources.py`` checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.data.base import SOURCES, DataError, ImageDataset

if TYPE_CHECKING:
    from pipeline.spec import DatasetSpec

__all__ = ["DataError", "ImageDataset", "load_dataset"]


def load_dataset(spec: DatasetSpec) -> ImageDataset:
    """The job's real data in memory, by ``spec.source``, with its train fraction applied."""
    from pipeline.data import digits, folder, parquet_source, torchvision_sources  # noqa: F401  (register)

    try:
        fn = SOURCES[spec.source]
    except KeyError:
        raise DataError(f"dataset.source: unknown source {spec.source!r}; known: {sorted(SOURCES)}") from None
    return fn(spec).with_train_fraction(spec.train_fraction, spec.split_seed)
