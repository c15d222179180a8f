"""Publishing generated images as a Parquet dataset on any fsspec storage.

* :mod:`.storage`    URLs, filesystems, credential redaction, bounded retries
* :mod:`.schema`     the Arrow schema (Hugging Face ``Image``/``ClassLabel``), PNG encoding, shard tables
* :mod:`.parquet_io` Parquet writer settings (row groups by bytes, compression, page index) and checks
* :mod:`.atomic`     create-only and replace writes (local disk, S3 ``If-None-Match``, emulation)
* :mod:`.layout`     the dataset folder: card, ``data/logical_date=D/``, ``_genpipe/logical_date=D/``; names;
  :class:`PartitionLocation` (one date's folders, filesystem, link guard)
* :mod:`.manifest`   :class:`Manifest` (``manifest.json``, written last) and its checks
* :mod:`.writer_lease` one writer per partition
* :mod:`.card`       the dataset card ``README.md`` (Hugging Face ``dataset_info`` / ``configs``)
* :mod:`.commit`     exactly-once shard commit, verified by reading back
* :mod:`.partition`  :class:`Partition` (a location plus the protocol): run state, shards, resume,
  publish, verify, list, remove; no module listed before it imports it
* :mod:`.migrate`    moving genpipe 0.1 partitions (``date=D/``) into this layout
* :mod:`.reader`     :func:`open_dataset`: a consistent view for pyarrow, torch and Hugging Face
* :mod:`.torch_data` the map-style torch Dataset behind ``SyntheticDataset.torch()``
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_dataset", "SyntheticDataset", "Partition", "Manifest"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must stay cheap
    if name in ("open_dataset", "SyntheticDataset"):
        from pipeline.publish import reader

        return getattr(reader, name)
    if name in ("Partition", "Manifest"):
        from pipeline.publish import manifest, partition

        return getattr(partition if name == "Partition" else manifest, name)
    raise AttributeError(name)
