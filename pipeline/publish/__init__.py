"""Publishing generated images as a Parquet dataset on any fsspec storage.

* :mod:`.storage`    URLs, filesystems, credential redaction, bounded retries
* :mod:`.schema`     the Arrow schema (Hugging Face ``Image``/``ClassLabel``), PNG encoding, shard tables
* :mod:`.parquet_io` Parquet writer settings (row groups by bytes, compression, page index) and checks
* :mod:`.atomic`     create-only and replace writes (local disk, S3 ``If-None-Match``, emulation)
* :mod:`.layout`     shard file names, partition URLs, ShardInfo
* :mod:`.commit`     exactly-once shard commit (the whole commit API is importable from here)
* :mod:`.manifest`   ``manifest.json`` written last; resume / overwrite / retention helpers
* :mod:`.reader`     :func:`open_dataset`: a consistent view for pyarrow, torch and Hugging Face
* :mod:`.torch_data` the map-style torch Dataset behind ``SyntheticDataset.torch()``
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_dataset", "SyntheticDataset"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must stay cheap
    if name in __all__:
        from pipeline.publish import reader

        return getattr(reader, name)
    raise AttributeError(name)
