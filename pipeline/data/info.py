"""What every stage needs to know of the real data, without the data: :class:`DataInfo`.

Its own module, importing nothing of the package, so that the loaders (``base``, ``streaming``)
and the :class:`~pipeline.data.source.DataSource` interface that offers it all depend on it
without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataInfo:
    """What every stage needs to know of the real data, without the data."""

    image_shape: tuple[int, int, int]  # (C, H, W)
    class_names: list[str]
    key: str
    num_train: int | None  # None for a streamed dataset (not counted up front)
    num_test: int | None
    streaming: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def of(cls, data: Any, streaming: bool | None = None) -> DataInfo:
        """From an ``ImageDataset`` or a ``StreamingData`` (``streaming``: which, when not told)."""
        if streaming is None:
            streaming = not hasattr(data, "train_x")
        n_train = None if streaming else len(data.train_x)
        n_test = None if streaming else len(data.test_x)
        return cls(tuple(int(v) for v in data.image_shape), list(data.class_names), str(data.key), n_train, n_test,
                   streaming)

    def to_json(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape), "class_names": list(self.class_names), "key": self.key,
                "num_train": self.num_train, "num_test": self.num_test, "streaming": self.streaming}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DataInfo:
        return cls(tuple(int(v) for v in d["image_shape"]), [str(c) for c in d["class_names"]], str(d["key"]),
                   d.get("num_train"), d.get("num_test"), bool(d.get("streaming", False)))
