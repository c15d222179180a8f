"""Dataset sources. :func:`load_dataset` registers every source on its first call.

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

from pipeline.data.base import DataError, ImageDataset, load_dataset

__all__ = ["DataError", "ImageDataset", "load_dataset"]
