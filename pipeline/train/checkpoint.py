"""Checkpoint files: one ``state.pt`` (plain tensors and Python values) plus ``meta.json``, and
:class:`TrainState`, the one value that is written to and read from them.

Everything needed to resume is inside: model nets, EMA, optimizers, epoch, step, the
loss history and the hash of the training config. The RNG state at an epoch boundary is a
pure function of (seed, rank, epoch) (see loop.py), so a resumed run draws exactly the
numbers an uninterrupted run would have drawn. Loading is always ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pipeline.errors import EXIT_BAD_INPUT, GenpipeError

if TYPE_CHECKING:
    from pipeline.models.base import ModelFamily

STATE_FILE = "state.pt"
META_FILE = "meta.json"
#: the layout of ``state.pt``: the keys :meth:`TrainState.to_dict` writes
FORMAT = 1


class CheckpointError(GenpipeError, ValueError):
    """A checkpoint that is missing, corrupted or belongs to another model (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class CheckpointInfo:
    url: str  # fsspec URL of the checkpoint directory
    digest: str  # sha256 of state.pt, recorded in every published row
    epoch: int
    meta: dict[str, Any]


@dataclass(eq=False)  # tensors have no truth value: compare fields yourself
class TrainState:
    """Everything a checkpoint holds, as one value with :meth:`save` and :meth:`load` (the shape
    of lucidrains' ``Trainer.save``/``load``: one dict with the format, step, model, optimizers
    and EMA). On disk it is the dict :meth:`to_dict` gives, in ``state.pt``, beside ``meta.json``.

    ``model`` is ``ModelFamily.state_dict()``: kind, image_shape, num_classes, the nets, the EMA
    net and its update count. No RNG state: at an epoch boundary it is a function of (seed,
    rank, epoch). ``info`` says where a loaded state came from and its digest (never saved).
    """

    model: dict[str, Any]
    opts: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics dict per epoch
    train_hash: str | None = None  # JobSpec.train_hash() of the run that wrote it
    meta: dict[str, Any] = field(default_factory=dict)  # job, date, kind, class names, image shape, ...
    format: int = FORMAT
    info: CheckpointInfo | None = field(default=None, repr=False)

    @classmethod
    def capture(cls, fam: ModelFamily, opts: Mapping[str, torch.optim.Optimizer], *, epoch: int, step: int,
                history: list[dict[str, Any]], train_hash: str | None, meta: Mapping[str, Any]) -> TrainState:
        """The state of a training run now: ``fam``'s nets and EMA, the optimizers, the counters."""
        return cls(model=fam.state_dict(), opts={k: o.state_dict() for k, o in opts.items()}, epoch=epoch,
                   step=step, history=list(history), train_hash=train_hash, meta=dict(meta))

    @property
    def kind(self) -> str:
        return str(self.model.get("kind"))

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.model.get("image_shape", ()))

    @property
    def num_classes(self) -> int:
        return int(self.model.get("num_classes", 0))

    def restore(self, fam: ModelFamily, opts: Mapping[str, torch.optim.Optimizer] | None = None,
                *, what: str = "checkpoint") -> None:
        """Load the nets and EMA into ``fam`` (which must be the same model: CheckpointError
        naming ``what`` if not) and, when given, the optimizers' states into ``opts``."""
        check_fits(self.model, fam, what=what)
        fam.load_state_dict(self.model)
        for k, o in (opts or {}).items():
            if k not in self.opts:
                raise CheckpointError(f"{what}: no state for optimizer {k!r}")
            o.load_state_dict(self.opts[k])

    def to_dict(self) -> dict[str, Any]:
        """What ``state.pt`` holds (format 1)."""
        return {"format": self.format, "model": self.model, "opts": self.opts, "epoch": self.epoch,
                "step": self.step, "history": self.history, "train_hash": self.train_hash, "meta": self.meta}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], where: str = "checkpoint") -> TrainState:
        """The state a ``state.pt`` dict holds; CheckpointError if it is not a genpipe checkpoint."""
        if not isinstance(state, Mapping) or state.get("format") != FORMAT or not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{where}: not a genpipe checkpoint")
        try:
            return cls(model=state["model"], opts=dict(state.get("opts") or {}), epoch=int(state.get("epoch", 0)),
                       step=int(state.get("step", 0)), history=list(state.get("history") or []),
                       train_hash=state.get("train_hash"), meta=dict(state.get("meta") or {}))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: not a genpipe checkpoint ({exc})") from None

    def save(self, url: str, storage_options: Mapping[str, Any] | None = None) -> str:
        """Write ``state.pt`` and ``meta.json`` (the meta, epoch, step, format and the sha256 of
        ``state.pt``) into the directory ``url`` (a local path or any fsspec URL). Returns the
        sha256: the digest :meth:`load` reports and every published row records."""
        return _write(url, storage_options, self.to_dict(), dict(self.meta, epoch=self.epoch, step=self.step))

    @classmethod
    def load(cls, url: str, storage_options: Mapping[str, Any] | None = None,
             map_location: str | torch.device = "cpu", *, where: str | None = None) -> TrainState:
        """Read the checkpoint directory ``url`` (or its ``state.pt``), tensors onto ``map_location``.
        CheckpointError naming ``where`` (default: the URL) if it is missing, damaged or not genpipe's."""
        from pipeline.publish.storage import join, url_to_fs

        where = url if where is None else where
        fs, path = url_to_fs(url, dict(storage_options or {}))
        state_path = join(path, STATE_FILE) if not path.endswith(STATE_FILE) else path
        try:
            with fs.open(state_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise CheckpointError(f"{where}: no checkpoint there ({STATE_FILE} missing)") from None
        ts = cls.from_dict(load_state_bytes(data, where, map_location), where)
        ts.info = CheckpointInfo(url=url.removesuffix("/" + STATE_FILE), digest=hashlib.sha256(data).hexdigest(),
                                 epoch=ts.epoch, meta=ts.meta)
        return ts


def check_fits(model: Mapping[str, Any], fam: ModelFamily, *, what: str = "checkpoint", classes: bool = True,
               classes_hint: str = "") -> None:
    """CheckpointError naming ``what`` unless the model state ``model`` (``TrainState.model``) is of
    ``fam``'s kind and image shape and, when ``classes``, class count (``classes_hint`` follows
    that problem's message)."""
    if model.get("kind") != fam.kind:
        raise CheckpointError(f"{what} holds a {model.get('kind')!r} model, the spec asks for {fam.kind!r}")
    shape = tuple(model.get("image_shape", ()))
    if shape != tuple(fam.image_shape):
        raise CheckpointError(f"{what} image shape {shape} != dataset's {tuple(fam.image_shape)}")
    if classes and model.get("num_classes") != fam.num_classes:
        raise CheckpointError(f"{what} has {model.get('num_classes')} classes, the dataset {fam.num_classes}"
                              + classes_hint)


def _write(url: str, storage_options: Mapping[str, Any] | None, state: dict[str, Any],
           meta: dict[str, Any]) -> str:
    from pipeline.publish.storage import is_local, join, url_to_fs

    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    fs, path = url_to_fs(url, dict(storage_options or {}))
    if is_local(url):  # object stores have no folders to make
        fs.makedirs(path, exist_ok=True)
    with fs.open(join(path, STATE_FILE), "wb") as f:  # the state first: meta.json names its digest
        f.write(data)
    with fs.open(join(path, META_FILE), "w") as f:
        json.dump(dict(meta, format=FORMAT, sha256=digest), f, indent=1)
    return digest


def save_checkpoint_dir(directory: str, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a ``state.pt`` dict as it is (see :meth:`TrainState.save`, which builds it)."""
    _write(directory, None, state, meta)


def load_state_bytes(data: bytes, where: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise CheckpointError(f"{where}: corrupted or unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{where}: not a genpipe checkpoint")
    return state


def load_checkpoint(
    url: str, storage_options: dict | None = None, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], CheckpointInfo]:
    """Read a checkpoint directory (any fsspec URL). Returns (the ``state.pt`` dict, info): for
    callers that want the plain dict; see :meth:`TrainState.load`."""
    ts = TrainState.load(url, storage_options, map_location)
    assert ts.info is not None
    return ts.to_dict(), ts.info


def verify_checkpoint(url: str, storage_options: dict | None = None) -> str | None:
    """None if the checkpoint directory at ``url`` is intact, else what is wrong with it: missing
    or unreadable files, a ``state.pt`` whose sha256 differs from the one ``meta.json`` recorded
    when it was written (a bit flip torch.load would not notice), or one torch cannot load."""
    from pipeline.publish.storage import join, url_to_fs

    fs, path = url_to_fs(url, storage_options)
    try:
        with fs.open(join(path, STATE_FILE), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return f"{STATE_FILE} missing"
    except OSError as exc:
        return f"{STATE_FILE} unreadable ({exc})"
    try:
        meta = json.loads(fs.cat_file(join(path, META_FILE)))
        recorded = meta.get("sha256") if isinstance(meta, dict) else None
    except FileNotFoundError:
        recorded = None  # written before meta.json carried the digest: torch.load decides
    except (OSError, ValueError):
        return f"{META_FILE} unreadable"
    if recorded is not None and recorded != hashlib.sha256(data).hexdigest():
        return f"{STATE_FILE} does not match the sha256 in {META_FILE} (truncated or changed)"
    try:
        load_state_bytes(data, url)
    except CheckpointError as exc:
        return str(exc).removeprefix(f"{url}: ")
    return None

