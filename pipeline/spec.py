"""The job spec: one YAML file under jobs/ describes one job, validated once at the edge.

Every part is a small pydantic model with ``extra="forbid"`` so a typo is an error,
not a silently ignored key. The spec is the single config object that flows inward
from the CLI; nothing below the CLI reads YAML or environment variables for settings.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import EXIT_BAD_INPUT, GenpipeError

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def _known_protocols(url: str) -> str:
    """A plain path, or a URL whose protocol(s) fsspec knows (whether or not its package is
    installed here: the cluster may have gcsfs where the laptop has not). Never empty: an empty
    path would mean the current directory."""
    from fsspec.registry import known_implementations, registry

    if not url.strip():
        raise ValueError("must not be empty (an empty path is the current directory): give a path or URL")
    for part in url.split("::"):
        if "://" in part:
            proto = part.split("://", 1)[0].lower()
            if proto not in known_implementations and proto not in registry:
                raise ValueError(f"{proto!r} is not a storage protocol fsspec knows (e.g. s3://, gs://, file://)")
    return url


Url = Annotated[str, AfterValidator(_known_protocols)]


def _not_a_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    return v


def _an_int(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {str(v).lower()}")
    if isinstance(v, numbers.Integral):  # numpy's too (a script computing a spec)
        return int(v)
    return v  # anything else meets the strict check: "Input should be a valid integer"


#: integers are strict: ``true`` is not 1 and ``"3"`` or ``3.0`` is not 3 (YAML writes ints as ints)
Int = Annotated[int, Strict(), BeforeValidator(_an_int)]
#: floats accept ints and YAML's ``1e-3`` (a string to YAML 1.1), never booleans; inf/nan are
#: refused by the models' ``allow_inf_nan=False``
Float = Annotated[float, BeforeValidator(_not_a_bool)]


class SpecError(GenpipeError, ValueError):
    """A job spec that cannot be used. ``problems`` holds one line per problem (exit code 2)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AugmentSpec(_Part):
    """Augmentation of what a GAN's discriminator sees (small affine jitter), ADA-style
    (Karras et al. 2020): applied to real and generated images alike, never to the generator's
    target, so it cannot leak into the samples. For GAN families only; it helps when the real
    data is small enough for the discriminator to overfit. VAE and DDPM imitate their training
    images directly, so augmenting those would teach them the augmented distribution: refused."""

    enabled: bool = False
    max_rotation: Float = Field(10.0, ge=0, le=45, description="degrees")
    max_shift: Float = Field(0.1, ge=0, le=0.5, description="fraction of the image side")


class DatasetSpec(_Part):
    source: Literal["digits", "mnist", "fashion_mnist", "cifar10", "image_folder", "parquet"] = "digits"
    path: Url | None = Field(None, description="root folder / URL for sources that read files")
    download: bool = False
    image_size: Int | None = Field(None, ge=8, le=256, description="resize to this square size")
    channels: Literal[1, 3] | None = Field(None, description="force grayscale (1) or RGB (3)")
    test_fraction: Float = Field(0.2, gt=0, lt=1)
    split_seed: Int = Field(0, ge=0)
    train_fraction: Float = Field(
        1.0, gt=0, le=1, description="train the generator on this stratified, seeded (split_seed) fraction of the "
        "train split: the low-data question (evaluation reports uplift_same_data against exactly these images)")
    image_column: str = "image"
    label_column: str = "label"
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for reading the input (endpoint, profile ...)"
    )
    streaming: bool = Field(False, description="stream training data through Ray Data (image_folder, parquet)")
    augment: AugmentSpec = AugmentSpec()

    @model_validator(mode="after")
    def _path_needed(self) -> DatasetSpec:
        if self.source in ("image_folder", "parquet") and not self.path:
            raise ValueError(f"dataset.path is required for source {self.source!r}")
        if self.streaming and self.source not in ("image_folder", "parquet"):
            raise ValueError("dataset.streaming works for the image_folder and parquet sources")
        if self.streaming and self.train_fraction < 1:
            raise ValueError("dataset.train_fraction works with in-memory datasets, not dataset.streaming")
        return self


class _ModelBase(_Part):
    latent_dim: Int = Field(64, ge=2, le=1024)
    base_channels: Int = Field(64, ge=8, le=1024)
    ema_decay: Float = Field(0.999, ge=0, lt=1)


class DCGANSpec(_ModelBase):
    kind: Literal["dcgan"] = "dcgan"
    label_smoothing: Float = Field(0.1, ge=0, lt=0.5)


class GANSpec(_ModelBase):
    """The fully connected conditional GAN; ``base_channels`` is unused (``hidden`` sets widths)."""

    kind: Literal["gan"]
    hidden: Int = Field(128, ge=8, le=4096, description="generator hidden -> 2*hidden, discriminator 2*hidden -> hidden")
    batch_norm: bool = Field(True, description="BatchNorm1d in the generator's hidden layers")
    dropout: Float = Field(0.3, ge=0, lt=1, description="discriminator dropout")
    label_smoothing: Float = Field(0.1, ge=0, lt=0.5)


class VAESpec(_ModelBase):
    kind: Literal["vae"]
    beta: Float = Field(1.0, gt=0)


class DDPMSpec(_ModelBase):
    kind: Literal["ddpm"]
    timesteps: Int = Field(400, ge=10, le=4000)
    schedule: Literal["linear", "cosine"] = "cosine"
    cond_drop_prob: Float = Field(0.1, ge=0, lt=1, description="label dropout for classifier-free guidance")
    guidance_scale: Float = Field(2.0, ge=0, le=20)
    sample_steps: Int = Field(10, ge=1, le=1000, description="solver steps at sampling time (one net call "
                              "each); 10 with dpm++2m matched DDIM 50's CAS on digits (bench/results/ddpm-steps-cpu.json)")
    sampler: Literal["ddim", "dpm++2m"] = Field(
        "dpm++2m", description="dpm++2m (DPM-Solver++ 2M, Lu et al. 2022) or ddim (Song et al. 2021)")

    @model_validator(mode="after")
    def _steps(self) -> DDPMSpec:
        if self.sample_steps > self.timesteps:
            raise ValueError("model.sample_steps cannot exceed model.timesteps")
        return self


ModelSpec = Annotated[DCGANSpec | GANSpec | VAESpec | DDPMSpec, Field(discriminator="kind")]


MAX_EPOCHS = 100_000


class TrainSpec(_Part):
    epochs: Int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: Int = Field(64, ge=1, le=65_536, description="per worker")
    lr: Float = Field(2e-4, gt=0, le=1)
    betas: tuple[Float, Float] = (0.5, 0.999)
    num_workers: Int = Field(2, ge=1, le=4096)
    use_gpu: bool = False
    cpus_per_worker: Float = Field(1.0, ge=0)
    resources_per_worker: dict[str, Annotated[Float, Field(ge=0)]] = Field(default_factory=dict)
    seed: Int = Field(0, ge=0)
    checkpoint_every: Int = Field(1, ge=1, description="epochs between checkpoints")
    max_failures: Int = Field(0, ge=-1, description="worker-group restarts (-1: unlimited)")
    bf16: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU)")
    init_from: Url | None = Field(None, description="checkpoint URL to start from (fine-tuning)")
    init_label_map: Literal["strict", "reinit"] = Field(
        "strict", description="what to do when init_from has a different class count"
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("betas must lie in [0, 1)")
        return v


#: the most images one job and date may publish, and the most shards (files) they may span: a
#: plan is O(shards) in memory and time (seeds and labels are computed per shard, see sample/plan.py)
MAX_IMAGES = 10_000_000_000
MAX_SHARDS = 100_000


class FilterSpec(_Part):
    """Keep only generated images that a classifier trained on the generator's own real training
    images assigns to their label with at least ``min_confidence``. Each row tries up to
    ``max_attempts`` candidate seeds that follow from the plan (the first accepted one is kept;
    after that many rejections, the most confident candidate), so a shard never holds fewer rows
    than asked for and the same spec gives the same rows. The acceptance rate per class goes into
    the manifest. See pipeline/sample/filter.py."""

    min_confidence: Float = Field(0.9, gt=0, le=1, description="the judge's probability for the image's own label")
    max_attempts: Int = Field(4, ge=1, le=32, description="candidate seeds per row before the best one is kept")


class SampleSpec(_Part):
    num_images: Int = Field(10_000, ge=1, le=MAX_IMAGES)
    per_class: dict[int, Int] | None = Field(
        None, description="explicit image count per class label; overrides num_images"
    )
    labels: list[Int] | None = Field(None, description="restrict uniform sampling to these labels")
    shard_size: Int = Field(2_000, ge=1, le=10_000_000)
    num_actors: Int | None = Field(None, ge=1, le=4096, description="default: one per GPU, else 2")
    use_gpu: bool | None = Field(None, description="default: train.use_gpu")
    batch_size: Int = Field(1024, ge=1, le=1_048_576)
    format: Literal["png", "raw"] = "png"
    mode: Literal["auto", "fused", "split"] = Field(
        "auto", description="fused: actors generate+encode+write; split: actors generate, CPU tasks encode "
        "(auto: split when sampling on GPUs)"
    )
    seed: Int = Field(0, ge=0)
    output: Url = Field("outputs/datasets", description="fsspec URL of the dataset root")
    grid_per_class: Int = Field(10, ge=1, le=64)
    filter: FilterSpec | None = Field(None, description="drop images a real-trained classifier disowns "
                                      "(off when absent)")

    @field_validator("per_class", mode="before")
    @classmethod
    def _one_count_per_label(cls, v: Any) -> Any:
        """Labels are ints; as mapping keys YAML may give ``0`` and ``"0"`` apart, which would
        silently collapse into one (the last count winning): refused, as is a boolean label."""
        if not isinstance(v, dict):
            return v
        seen: dict[int, Any] = {}
        for k in v:
            if isinstance(k, bool):
                raise ValueError(f"label {str(k).lower()} is a boolean, not a class label")
            try:
                label = int(k) if isinstance(k, int) or (isinstance(k, str) and k.strip().lstrip("-").isdigit()) \
                    else None
            except ValueError:
                label = None
            if label is None:
                continue  # pydantic names it
            if label in seen:
                raise ValueError(f"label {label} is given twice ({seen[label]!r} and {k!r})")
            seen[label] = k
        return v

    @field_validator("per_class")
    @classmethod
    def _counts(cls, v: dict[int, int] | None) -> dict[int, int] | None:
        if v is not None:
            if not v:
                raise ValueError("per_class must not be empty")
            bad = {k: c for k, c in v.items() if c < 0 or k < 0}
            if bad:
                raise ValueError(f"labels and counts must be >= 0, got {bad}")
            if sum(v.values()) == 0:
                raise ValueError("per_class counts sum to 0")
            if sum(v.values()) > MAX_IMAGES:
                raise ValueError(f"per_class counts sum to {sum(v.values())}, more than {MAX_IMAGES} images")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(x < 0 for x in v) or len(set(v)) != len(v)):
            raise ValueError("labels must be a non-empty list of distinct non-negative ints")
        return v

    @model_validator(mode="after")
    def _plannable(self) -> SampleSpec:
        shards = -(-self.total // self.shard_size)
        if shards > MAX_SHARDS:
            raise ValueError(
                f"sample.shard_size: {self.total} images in shards of {self.shard_size} make {shards} shards, "
                f"more than {MAX_SHARDS} (each is a file and a manifest entry): use sample.shard_size >= "
                f"{-(-self.total // MAX_SHARDS)}")
        return self

    @property
    def total(self) -> int:
        return sum(self.per_class.values()) if self.per_class else self.num_images


class GateSpec(_Part):
    """Quality measurement and thresholds; a run that misses one is retrained or fails, and
    publishes nothing. Thresholds left out are measured and reported but don't gate."""

    measure: bool = Field(True, description="measure quality on every run (FID, CAS, uplift, memorization)")
    fid_max: Float | None = Field(None, gt=0)
    cas_min: Float | None = Field(None, ge=0, le=1)
    memorization_max: Float | None = Field(None, ge=0, le=1)
    uplift_min: Float | None = None
    eval_images: Int = Field(2_000, ge=100, le=1_000_000, description="held in memory for FID")
    seeds: Int = Field(5, ge=1, le=30, description="probe classifiers behind every CAS and uplift figure")
    probe: Literal["mlp", "cnn"] = Field("mlp", description="probe classifier: mlp (fast, small images) or cnn")
    distill_fraction: Float = Field(0.1, gt=0, le=1, description="uplift_distill: share of the generator's "
                                    "training images the classifier gets")
    synthetic_ratio: Float | None = Field(
        None, gt=0, description="uplift: at most this many synthetic images per real image (None: all "
        "eval_images). Measured on digits (bench/results/quality-digits.json, 'mix'): uplift_distill grows "
        "with the synthetic share up to all of them (+0.7 points at 0.25:1, +5.3 at 14:1), uplift_full is "
        "flat at every share; for a generator trained on the classifier's own subset, all of them cost the GAN "
        "families and the VAE 0.5-1.2 points of uplift_same_data (use 1:1 or less there)")
    uplift_metric: Literal["uplift_distill", "uplift_same_data", "uplift_full"] = Field(
        "uplift_same_data", description="which uplift gate.uplift_min checks")
    retries: Int = Field(0, ge=0, le=10)
    retry_epochs_factor: Float = Field(2.0, ge=1.0, le=100.0, description="epochs multiply by this on each retry")


class ScheduleSpec(_Part):
    cron: str = Field(..., description="5-field cron expression, e.g. '0 2 * * *'")
    timezone: str = "UTC"
    catchup_days: Int = Field(3, ge=0, le=366)
    retention: Int | None = Field(None, ge=1, description="keep the last N date partitions")
    lease_seconds: Int = Field(6 * 3600, ge=60)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from pipeline.schedule.cron import check_cron

        try:
            return check_cron(v)  # normalised: 5 fields, macros expanded
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("schedule.cron: ")) from None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from pipeline.schedule.cron import check_timezone

        try:
            return check_timezone(v)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("schedule.timezone: ")) from None


#: model fields that only change how a trained model is sampled (kept out of train_hash, in spec_hash)
SAMPLING_ONLY = ("guidance_scale", "sample_steps", "sampler")

#: families with a discriminator: augmentation goes to what it sees (real and fake alike)
ADVERSARIAL_KINDS = ("dcgan", "gan")
#: families whose nets hold BatchNorm layers (a batch of one image cannot be trained)
BATCH_NORM_KINDS = ("dcgan", "gan")


class JobSpec(_Part):
    name: str = Field(..., pattern=NAME_RE)
    description: str = ""
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = DCGANSpec()
    train: TrainSpec = TrainSpec()
    sample: SampleSpec = SampleSpec()
    gate: GateSpec = GateSpec()
    schedule: ScheduleSpec | None = None
    storage: Url = Field("outputs/runs", description="fsspec URL for checkpoints, caches and run state")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="passed to fsspec")
    shared_storage: bool = Field(False, description="a local path that every node mounts (NFS)")

    @model_validator(mode="after")
    def _trainable(self) -> JobSpec:
        if self.model.kind in BATCH_NORM_KINDS and self.train.batch_size < 2:
            raise ValueError(f"train.batch_size: a {self.model.kind}'s BatchNorm layers need at least 2 images "
                             "per batch")
        g = self.gate
        if g.retries:
            last = self.train.epochs * g.retry_epochs_factor ** g.retries
            if last > MAX_EPOCHS:
                raise ValueError(f"gate.retry_epochs_factor: {self.train.epochs} epochs x "
                                 f"{g.retry_epochs_factor:g}^{g.retries} retries would train {last:.3g} epochs")
        return self

    @model_validator(mode="after")
    def _augment_only_where_it_cannot_leak(self) -> JobSpec:
        if self.dataset.augment.enabled and self.model.kind not in ADVERSARIAL_KINDS:
            raise ValueError(
                f"dataset.augment: a {self.model.kind} imitates its training images, so augmenting them "
                "would put the augmented distribution into the samples; augmentation applies to what a GAN's "
                "discriminator sees (dcgan, gan) only: set dataset.augment.enabled: false")
        return self

    def spec_hash(self) -> str:
        """Hash of everything that determines the published rows.

        Not where they go, not credentials, not knobs that only change speed or resilience
        (actor count, batch size: generation runs in fixed-shape blocks, see sample/generate.py).
        """
        d = self.model_dump(mode="json", exclude={"storage_options", "description", "schedule", "gate",
                                                  "storage", "shared_storage"})
        for k in ("output", "num_actors", "batch_size", "grid_per_class", "mode"):
            d["sample"].pop(k, None)
        if d["sample"].get("filter") is None:  # absent: the hash of every spec from before the field
            d["sample"].pop("filter", None)
        d["dataset"].pop("storage_options", None)
        for k in ("max_failures", "checkpoint_every", "resources_per_worker", "cpus_per_worker"):
            d["train"].pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def train_hash(self) -> str:
        """Hash of what determines the trained weights (a sampling change keeps the checkpoint)."""
        d = self.model_dump(mode="json", include={"name", "dataset", "model", "train"})
        d["dataset"].pop("storage_options", None)
        for k in ("max_failures", "checkpoint_every", "resources_per_worker", "cpus_per_worker"):
            d["train"].pop(k, None)
        for k in SAMPLING_ONLY:  # how a trained model is sampled: the same weights serve any of these
            d["model"].pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    # discriminated unions put the tag in the path (model.vae.beta): drop it
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in ("dcgan", "gan", "vae", "ddpm"))]
    return ".".join(parts) or "<root>"


#: problems listed one per line, at most; then one line says how many more there are
MAX_PROBLEMS = 20
#: unknown keys of one mapping are listed one per line up to this many, else on one line
_UNKNOWN_EACH = 3


def errors_of(exc: ValidationError) -> list[str]:
    """One line per problem, named by field path; bounded whatever the input (a file with
    400,000 unknown keys gives one line for them, not 400,000)."""
    out: list[str] = []
    unknown: dict[str, list[str]] = {}
    for e in exc.errors(include_url=False, include_input=False):
        if e["type"] == "extra_forbidden":
            unknown.setdefault(_fmt_loc(e["loc"][:-1]), []).append(str(e["loc"][-1]))
            continue
        msg = e["msg"].removeprefix("Value error, ")
        loc = _fmt_loc(e["loc"])
        # a model-level check names its field itself ("sample.shard_size: ..."): not "sample: sample.shard_size"
        named = re.match(r"([a-z_]+(?:\.[a-z_0-9]+)*): ", msg)
        if named and (loc == "<root>" or named.group(1).startswith(loc + ".")):
            out.append(msg)
        else:
            out.append(f"{loc}: {msg}")
    for parent, keys in unknown.items():
        if len(keys) <= _UNKNOWN_EACH:
            out += [f"{k if parent == '<root>' else parent + '.' + k}: unknown key (extra inputs are not permitted)"
                    for k in keys]
        else:
            shown = ", ".join(keys[:_UNKNOWN_EACH])
            out.append(f"{'top level' if parent == '<root>' else parent}: {len(keys)} unknown keys ({shown}, ...): extra inputs are not permitted")
    if len(out) > MAX_PROBLEMS:
        out = [*out[:MAX_PROBLEMS], f"... and {len(out) - MAX_PROBLEMS} more problems"]
    return out


def parse_spec(data: Any, source: str = "<spec>") -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError(source, ["the top level must be a mapping of keys to values"])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, errors_of(exc)) from None


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read and validate a YAML job spec. Raises SpecError with one line per problem."""
    from pipeline.spec_yaml import MAX_BYTES, load_yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(str(path), ["file not found"])
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise SpecError(str(path), [f"{size} bytes: a job spec is at most {MAX_BYTES} bytes"])
    try:
        data = load_yaml(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(str(path), [f"malformed YAML: {where}{problem}"]) from None
    except UnicodeDecodeError:
        raise SpecError(str(path), ["not a text file"]) from None
    if overrides:
        if data is not None and not isinstance(data, dict):  # else the overrides would replace it whole
            raise SpecError(str(path), ["the top level must be a mapping of keys to values"])
        data = deep_merge(data or {}, overrides)
    return parse_spec(data, str(path))


def deep_merge(base: Any, over: dict[str, Any]) -> Any:
    if not isinstance(base, dict):
        return over
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out.get(k), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``train.epochs=3`` style overrides from the CLI; values are parsed as YAML scalars."""
    from pipeline.spec_yaml import load_yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SpecError("--set", [f"{item!r}: expected key.path=value"])
        key, raw = item.split("=", 1)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*", key):
            raise SpecError("--set", [f"{key!r}: not a field path"])
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpecError("--set", [f"{item!r}: {p!r} was already set to a single value"])
        try:
            node[parts[-1]] = load_yaml(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SpecError("--set", [f"{item!r}: the value is not valid YAML ({problem})"]) from None
    return out
