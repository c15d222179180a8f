"""Fine-tuning: start a new run from an earlier run's weights (the classic transfer step)."""

from __future__ import annotations

from typing import Any

from pipeline.models.base import ModelFamily
from pipeline.train.checkpoint import CheckpointError, check_fits


def load_weights_for_finetune(fam: ModelFamily, state: dict[str, Any], label_map: str) -> list[str]:
    """Load an earlier checkpoint's nets and EMA into ``fam``; returns the names re-initialised.
    ``state`` is the checkpoint's model state (``TrainState.model``).

    ``label_map="strict"``: kind, image shape and class count must match.
    ``label_map="reinit"``: a different class count is allowed; every tensor whose shape
    depends on it (label embeddings, one-hot input channels) keeps its fresh initialisation.
    """
    check_fits(state, fam, what="train.init_from", classes=label_map != "reinit",
               classes_hint=": set train.init_label_map: reinit to re-initialise the label layers")
    skipped: list[str] = []
    targets = dict(fam.nets, ema=fam.ema)
    sources = dict(state["nets"], ema=state["ema"])
    for name, net in targets.items():
        own = net.state_dict()
        src = sources[name] if name != "ema" else sources["ema"]
        keep = {}
        for k, v in own.items():
            if k in src and tuple(src[k].shape) == tuple(v.shape):
                keep[k] = src[k]
            else:
                skipped.append(f"{name}.{k}")
        net.load_state_dict(keep, strict=False)
    if label_map == "strict" and skipped:
        raise CheckpointError(f"train.init_from does not fit this model: {skipped[:3]}")
    return skipped
