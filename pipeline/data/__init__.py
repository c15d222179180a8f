"""Dataset sources. Importing this package registers every source.

- ``digits``: scikit-learn's bundled handwritten digits (default, offline);
- ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's datasets (:mod:`.torchvision_sources`);
- ``image_folder``: one sub-folder per class, local or object storage (:mod:`.folder`);
- ``parquet``: Hugging Face ``Image``-layout or plain-bytes Parquet, incl. genpipe's own output
  (:mod:`.parquet_source`).

:mod:`.streaming` builds Ray Data datasets for the file-backed sources (larger than memory).
"""

from pipeline.data import digits, folder, parquet_source, torchvision_sources  # noqa: F401
from pipeline.data.base import DataError, ImageDataset, load_dataset

__all__ = ["DataError", "ImageDataset", "load_dataset"]
