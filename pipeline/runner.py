"""Runs one job for one logical date: train -> evaluate (gate) -> sample -> publish.

Each stage reads what the previous one wrote to storage (checkpoint URL, partition URL),
so running the same command again resumes where a failed run stopped: a finished
training run is not repeated, a complete shard is not rewritten, and a partition whose
manifest matches the spec is reported as already published.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline.errors import BadInput, JobFailed
from pipeline.faults import from_env as faults_from_env
from pipeline.spec import JobSpec

if TYPE_CHECKING:  # pipeline.evaluate imports torch: loaded where the gate runs, not at import
    from pipeline.evaluate.gate import GateFailure

log = logging.getLogger("genpipe")


@dataclass
class RunOutcome:
    status: str  # "published" | "already-published"
    partition: str
    rows: int
    shards: int
    shards_skipped: int = 0
    metrics: dict[str, Any] | None = None
    checkpoint: str | None = None
    train_seconds: float = 0.0
    sample_seconds: float = 0.0
    images_per_s: float = 0.0
    attempts: int = 1
    files: list[str] = field(default_factory=list)


#: seconds to wait for a TCP connection to a cluster address before calling it unreachable
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ConnectionError within ``timeout`` seconds when nothing accepts connections at a cluster
    address (``host:port`` of the GCS, or ``ray://host:port``). ``ray.init`` itself retries for
    minutes first: 824 s for a closed GCS port, 34 s for a closed ``ray://`` one."""
    import socket

    if address in ("auto", "local"):  # Ray looks these up itself, and fails fast when there is none
        return
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port: Ray parses (and refuses) it
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConnectionError(f"nothing answers at {address} ({why}): is the cluster up and the address "
                              "right? (RAY_ADDRESS / --address)") from None


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` / RAY_ADDRESS, or start an embedded local Ray.

    An address that nothing answers at fails in seconds (:func:`check_reachable`). The embedded
    cluster's dashboard listens on loopback; Ray 2.60 has no setting to bind its Prometheus
    metrics endpoint there too (it binds every interface unless the node's own IP is loopback,
    and ``ray.init`` resolves 127.0.0.1 to the machine's address), so the embedded cluster runs
    with metrics collection off (``enable_metrics_collection: False``): no metrics port at all.
    A SIGTERM handler set before (the CLI's, see cli.py) is put back after ``ray.init``, which
    installs its own (``sys.exit`` inside a Ray call: the driver died with SIGABRT)."""
    import signal
    import threading

    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(dashboard_host="127.0.0.1", log_to_driver=True, logging_level=logging.WARNING,
                     _system_config={"enable_metrics_collection": False})
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def _probe_local_dir(field_name: str, path: str) -> None:
    """A local directory that can be created: no file in the way, the nearest existing ancestor
    accepts a new entry. The probe (mkdtemp + rmdir) restores the ancestor's times: no trace."""
    import tempfile

    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    if not os.path.isdir(p):
        raise BadInput(f"{field_name}: {path}: {p} is a file, not a directory")
    st = os.stat(p)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genpipe-probe-", dir=p))
    except OSError as exc:
        raise BadInput(f"{field_name}: {path}: cannot write under {p} ({exc.strerror or exc})") from None
    finally:
        if os.path.isdir(p):
            try:
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
            except OSError:  # a folder nothing may change (chattr +i) refused the probe already
                pass


def check_writable(field_name: str, url: str, so: dict[str, Any]) -> None:
    """Fail before any work when an output location can't be written (bucket missing, read-only dir,
    or ``memory://``, which lives in one process: Ray's workers write checkpoints and shards from others)."""
    from pipeline.publish.storage import is_local, url_to_fs

    if url.strip().lower().startswith("memory://"):
        raise BadInput(f"{field_name}: {url}: memory:// lives in this process only, and Ray's workers write "
                       "from their own processes: use a path or object storage (s3://, gs://, ...)")
    if is_local(url):
        _, path = url_to_fs(url, so)
        _probe_local_dir(field_name, path)
        return
    fs, path = url_to_fs(url, so)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    if protocol in ("s3", "s3a", "gs", "gcs", "az", "abfs"):
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            raise BadInput(f"{field_name}: bucket {bucket!r} does not exist or is not reachable with these credentials")


def check_data(spec: JobSpec, data: Any) -> None:
    """The loaded dataset can be trained and evaluated as specified (in-memory datasets; a streamed
    one is not counted before it is read)."""
    from pipeline.spec import BATCH_NORM_KINDS

    if spec.dataset.streaming:
        return
    n_train, n_test, world = len(data.train_x), len(data.test_x), spec.train.num_workers
    per_worker = n_train // world
    least = 2 if spec.model.kind in BATCH_NORM_KINDS else 1
    if per_worker < least:
        raise BadInput(f"train.num_workers: {n_train} training image(s) over {world} worker(s) leave {per_worker} "
                       f"per worker, and a {spec.model.kind} needs batches of at least {least}: add images or "
                       "use fewer workers")
    if spec.gate.measure and n_test == 0:
        raise BadInput(f"dataset.test_fraction: the test split is empty ({n_train} images, none left over for "
                       "testing: a class needs 2 or more images to give one to the test split); quality is "
                       "measured on real test images: add images, or set gate.measure: false")


def preflight(spec: JobSpec, data: Any, partition: str) -> None:
    """Everything that can be refused before Ray starts: the data fits the training and the gate, and
    the run storage, the output root and the partition folder itself (which may exist, read-only)
    can be written. BadInput (exit 2) naming the field."""
    so = spec.storage_options
    check_data(spec, data)
    check_writable("sample.output", spec.sample.output, so)
    check_writable("sample.output", partition, so)
    check_writable("storage", spec.storage, so)


def check_init_from(spec: JobSpec, data: Any) -> None:
    """train.init_from must be a readable genpipe checkpoint that fits this model and data."""
    from pipeline.models import build_model
    from pipeline.train.checkpoint import CheckpointError, load_checkpoint
    from pipeline.train.finetune import load_weights_for_finetune

    try:
        state, _ = load_checkpoint(spec.train.init_from, spec.storage_options)
        fam = build_model(spec.model, data.image_shape, data.num_classes)
        load_weights_for_finetune(fam, state["model"], spec.train.init_label_map)
    except CheckpointError as exc:
        msg = str(exc)
        raise BadInput(msg if msg.startswith("train.init_from") else f"train.init_from: {msg}") from None


def check_cluster(spec: JobSpec) -> None:
    """Fail fast, naming what is missing, instead of pending forever on an impossible request."""
    from pipeline.feasibility import check_snapshot, cluster_snapshot

    problems = check_snapshot(spec, cluster_snapshot())
    if problems:
        raise BadInput("the cluster can never run this job: " + "; ".join(problems))


def run_job(
    spec: JobSpec,
    date: str,
    *,
    overwrite: bool = False,
    address: str | None = None,
    reporter: Any = None,
) -> RunOutcome:
    """train -> gate -> sample -> publish, over one :class:`~pipeline.plan.RunPlan`."""
    import ray

    from pipeline.progress import ProgressBoard, Reporter

    rep = reporter or Reporter()
    job = _Publication(spec, date, overwrite, rep)
    if (done := job.already_published()) is not None:
        return done
    data = load_job_data(spec, address)
    plan = build_plan(spec, date, data)
    if spec.train.init_from:
        check_init_from(spec, data)
    preflight(spec, data, job.partition.data_url)
    ensure_ray(address)
    check_cluster(spec)
    plan = plan.on_cluster(ray.cluster_resources())
    describe(plan, data, rep)
    board = ProgressBoard.remote()
    try:
        judge = resolve_judge(plan, rep)  # before the gate: it measures the filtered images it would publish
        trained = train_and_gate(plan, data, board, rep, judge)
        return job.sample_and_publish(plan, data, trained, judge)
    finally:
        ray.kill(board)


@dataclass
class Trained:
    """What training and the gate hand to sampling: the accepted checkpoint and its evidence."""

    result: Any  # TrainResult of the accepted attempt
    spec: JobSpec  # the spec that attempt trained (a retry trains longer: see retry_spec)
    metrics: dict[str, Any] | None
    attempt: int

    @property
    def checkpoint(self) -> Any:
        return self.result.checkpoint


def load_job_data(spec: JobSpec, address: str | None) -> Any:
    """The job's :class:`~pipeline.data.source.DataSource` (a streamed one lazily: listing and one
    peek, no full load; it needs Ray); BadInput."""
    from pipeline.data import DataError
    from pipeline.data.source import open_source

    try:
        if spec.dataset.streaming:
            ensure_ray(address)
        return open_source(spec.dataset)
    except (DataError, ValueError, OSError) as exc:
        raise BadInput(str(exc)) from None


def build_plan(spec: JobSpec, date: str, data: Any) -> Any:
    """The :class:`~pipeline.plan.RunPlan` of this run (before any cluster: its sampling actor
    count is resolved by ``RunPlan.on_cluster``); BadInput (e.g. a label outside the classes)."""
    from pipeline.plan import DataInfo, RunPlan

    try:
        return RunPlan.build(spec, date, DataInfo.of(data, spec.dataset.streaming))
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def describe(plan: Any, data: Any, rep: Any) -> None:
    spec, info = plan.spec, plan.data
    sizes = "streamed" if info.streaming else f"{info.num_train} train / {info.num_test} test"
    if getattr(data, "all_train_x", None) is not None:
        sizes += f" (train_fraction {spec.dataset.train_fraction:g} of {len(data.all_train_x)})"
    rep.message(f"job {spec.name} date={plan.date}: {sizes} images {info.image_shape}, {info.num_classes} classes; "
                f"model {spec.model.kind}; {plan.train.count} worker(s){' on GPU' if plan.train.uses_gpu else ''}")


def retry_spec(spec: JobSpec, attempt: int) -> JobSpec:
    """The gate's retry policy: attempt ``attempt`` (1, 2, ...) trains ``gate.retry_epochs_factor``
    times longer than the one before, resuming from its checkpoint. A new spec, validated like
    any other; the job's own spec is never changed."""
    epochs = spec.train.epochs
    for _ in range(attempt):
        epochs = max(int(round(epochs * spec.gate.retry_epochs_factor)), epochs + 1)
    d = spec.model_dump(mode="json")
    d["train"]["epochs"] = epochs
    return JobSpec.model_validate(d)


def no_retry_reason(metrics: dict[str, Any], failures: list[GateFailure]) -> str | None:
    """Why the gate's retry (train longer, :func:`retry_spec`) cannot help, or None when it may.

    Training longer can mend an under-trained model (FID, CAS, uplift) but never one that copies
    its training images: memorization only grows with more passes over the same few images (the
    digits DDPM on a 10 % subset reproduced 50-63 % of its 143 images, and more at more steps).
    So a memorization failure ends the job at once, with what to change instead."""
    if not any(f.metric == "memorization" for f in failures):
        return None
    n = metrics.get("generator_train_images")
    return ("memorization is not retried: training longer would only copy more of the generator's "
            f"{'' if n is None else f'{n} '}training images; train fewer epochs, on more data, or a smaller model")


def train_and_gate(plan: Any, data: Any, board: Any, rep: Any, judge: dict[str, Any] | None) -> Trained:
    """Train, measure, and retrain per :func:`retry_spec` until the gate passes or its retries
    run out (JobFailed: nothing is published)."""
    from pipeline.evaluate import check_gate
    from pipeline.progress import watch
    from pipeline.train import train
    from pipeline.train.checkpoint import CheckpointError

    spec = plan.spec
    meta = {"job": spec.name, "date": plan.date, "kind": spec.model.kind, "class_names": plan.data.class_names,
            "image_shape": list(plan.data.image_shape), "dataset_key": plan.data.key, "code_version": __version__}
    attempt, start_from, cur = 0, None, spec
    while True:
        task = rep.task(f"train {cur.model.kind}" + (f" (retry {attempt})" if attempt else ""), cur.train.epochs,
                        "epochs")
        try:
            tres = watch(board, "train", task, lambda c=cur, a=attempt, s=start_from: train(
                c, plan.date, meta, attempt=a, start_from=s, progress_actor=board, data=data),
                fmt=lambda m: " ".join(f"{k}={v:.3f}" for k, v in m.items() if k.startswith("loss")))
        except CheckpointError as exc:
            raise BadInput(str(exc)) from None
        task.update(cur.train.epochs, "done" if not tres.skipped else "already trained")
        if tres.phases:
            rep.message(f"training took {tres.seconds:.1f} s: "
                        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in tres.phases.items()))
        if not cur.gate.measure:
            return Trained(tres, cur, None, attempt)
        metrics = evaluate_checkpoint(cur, data, tres.checkpoint.url, rep, judge, plan.evaluate)
        failures = check_gate(cur.gate, metrics)
        metrics = dict(metrics, gate_failures=failures, train_epochs=cur.train.epochs, attempt=attempt)
        if not failures:
            return Trained(tres, cur, metrics, attempt)
        rep.message(f"quality gate failed: {'; '.join(failures)}")
        why_not = no_retry_reason(metrics, failures)
        if attempt >= spec.gate.retries or why_not:
            raise JobFailed(f"quality gate failed after {attempt + 1} attempt(s): {'; '.join(failures)}; "
                            + (f"{why_not}; " if why_not and attempt < spec.gate.retries else "")
                            + "nothing was published", metrics)
        attempt += 1
        start_from = {"url": tres.checkpoint.url, "mode": "resume"}
        cur = retry_spec(spec, attempt)


class _Publication:
    """The run's side of the partition protocol (:class:`~pipeline.publish.partition.Partition`
    does the storage): is it published already, and sample + publish under the writer lease."""

    def __init__(self, spec: JobSpec, date: str, overwrite: bool, rep: Any):
        from pipeline.publish.partition import Expected, Partition

        self.spec, self.date, self.overwrite, self.rep = spec, date, overwrite, rep
        self.spec_hash = spec.spec_hash()
        self.partition = Partition.of(spec.sample.output, spec.name, date, spec.storage_options)
        self.expected = Expected(spec.sample.total, spec.sample.shard_size)
        self._said: set[str] = set()

    def outcome_if_published(self, check: Any) -> RunOutcome | None:
        """The outcome if this spec published the partition and its files back the manifest up;
        None if it has to be (re)written (unpublished, or damaged: repaired); BadInput if another
        spec published it, or its manifest cannot be read."""
        where = self.partition.data_url
        if not check.present or self.overwrite:
            return None
        if check.spec_hash is None:
            raise BadInput(f"{where}: its manifest cannot be read ({check.problem}); rerun with --overwrite "
                           "to replace the partition")
        if check.spec_hash != self.spec_hash:
            raise BadInput(f"{where} was published by a different spec; rerun with --overwrite to replace it")
        if check.problem:
            if check.problem not in self._said:
                self._said.add(check.problem)
                self.rep.message(f"{where} is published but does not check out ({check.problem}): "
                                 "regenerating what is missing")
            return None
        man = check.manifest
        self.rep.message(f"{where} is already published ({man.num_rows} rows): nothing to do")
        return RunOutcome("already-published", where, man.num_rows, man.num_shards,
                          shards_skipped=man.num_shards, metrics=man.metrics, checkpoint=man.checkpoint, attempts=0)

    def already_published(self) -> RunOutcome | None:
        """Before any work: the layout is this genpipe's, no link inside, and is it done already?"""
        from pipeline.publish.layout import LayoutError
        from pipeline.publish.partition import check_layout
        from pipeline.publish.writer_lease import PartitionBusy

        part = self.partition
        try:
            check_layout(part.root, part.storage_options)  # never mix genpipe 0.1's date=D/ partitions in
            part.check_links()  # never write through a symbolic link inside the dataset folder
            if (done := self.outcome_if_published(part.check(self.expected))) is not None:
                if part.has_staging():  # temp files a failed write left behind (disk full, a kill)
                    from contextlib import suppress

                    with suppress(PartitionBusy), part.lease():
                        part.clean_staging()
                return done
        except LayoutError as exc:
            raise BadInput(str(exc)) from None
        return None

    def sample_and_publish(self, plan: Any, data: Any, trained: Trained, judge: dict[str, Any] | None) -> RunOutcome:
        """One writer per partition (a second run is refused, exit 2, while this one holds the
        lease); every shard carries this run's provenance, and the manifest lists only shards that do."""
        from pipeline.publish.layout import LayoutError
        from pipeline.publish.provenance import Provenance
        from pipeline.publish.writer_lease import PartitionBusy, check_still_held
        from pipeline.redaction import public_spec
        from pipeline.report import write_run_artifacts
        from pipeline.sample.fanout import ShardContext, sample_shards
        from pipeline.sample.plan import make_plan

        spec, part, rep, ckpt = self.spec, self.partition, self.rep, trained.checkpoint
        shard_plan = make_plan(spec.sample, plan.data.num_classes, spec.name, plan.date)
        prov = Provenance(self.spec_hash, ckpt.digest)
        try:
            with part.lease() as lease:
                now = part.check(self.expected)
                if (done := self.outcome_if_published(now)) is not None:  # published meanwhile by the lease's holder
                    return done
                if now.present and (now.manifest is None or now.problem
                                    or (now.manifest.spec_hash, now.manifest.checkpoint_digest) != prov.key()):
                    part.unpublish()  # --overwrite or a repair: the files it lists are about to change
                part.clean_staging()  # temp files a failed write left (this run holds the partition)
                state = part.run_state(self.spec_hash)
                ctx = ShardContext(partition=part, class_names=plan.data.class_names, fmt=spec.sample.format,
                                   model=spec.model.kind, checkpoint_digest=ckpt.digest,
                                   created_at=datetime.fromisoformat(state["created_at"]), faults=faults_from_env(),
                                   spec_hash=self.spec_hash, filter=filter_context(spec, judge))
                task = rep.task("sample", shard_plan.total, "images")
                skipped = 0
                t0 = time.perf_counter()

                def on_shard(out: dict[str, Any]) -> None:
                    nonlocal skipped
                    skipped += int(out["skipped"])
                    task.advance(out["info"].rows, f"shard {out['index'] + 1}/{shard_plan.num_shards}")

                infos = sample_shards(plan, shard_plan, ckpt.url, ctx, on_shard=on_shard)
                sample_seconds = time.perf_counter() - t0
                check_still_held(lease, part)
                # the manifest last (over shards that are all this run's), stale shards and staging
                # removed, the dataset card rewritten
                manifest = part.publish(infos, provenance=prov, spec_hash=self.spec_hash, code_version=__version__,
                                        num_images=shard_plan.total, class_names=plan.data.class_names,
                                        metrics=trained.metrics, checkpoint=ckpt.url, checkpoint_digest=ckpt.digest,
                                        model=spec.model.kind, fmt=spec.sample.format, spec=public_spec(spec),
                                        train_epochs=trained.spec.train.epochs,
                                        extra=manifest_extra(spec, judge, infos))
                files = write_run_artifacts(trained.spec, part, manifest, trained.result.history, trained.metrics,
                                            data)
        except (PartitionBusy, LayoutError) as exc:
            raise BadInput(str(exc)) from None
        rows = sum(i.rows for i in infos)
        rate = rows / max(sample_seconds, 1e-9)
        rep.message(f"published {rows} rows in {len(infos)} shards to {part.data_url} ({rate:.0f} images/s sampling)")
        return RunOutcome("published", part.data_url, rows, len(infos), skipped, trained.metrics, ckpt.url,
                          trained.result.seconds, sample_seconds, rate, trained.attempt + 1, files)


def resolve_judge(plan: Any, rep: Any) -> dict[str, Any] | None:
    """``sample.filter``'s judge, loaded or trained (and cached) in the cluster: its URL, sha256
    and test accuracy (None when the spec has no filter)."""
    spec = plan.spec
    if spec.sample.filter is None:
        return None
    import ray

    res = plan.evaluate
    task = ray.remote(_judge_task).options(num_cpus=res.bundle["CPU"], num_gpus=res.bundle.get("GPU", 0))
    judge = ray.get(task.remote(spec.model_dump(mode="json"), res.uses_gpu))
    rep.message(f"sample.filter: judge trained on {judge['num_train']} real images, test accuracy "
                f"{judge['test_acc']:.4f}; keeping images it gives their own label with p >= "
                f"{spec.sample.filter.min_confidence:g}")
    return judge


def _judge_task(spec_json: dict[str, Any], use_gpu: bool) -> dict[str, Any]:
    import torch

    from pipeline.sample.filter import ensure_judge
    from pipeline.sample.generate import pick_device

    torch.set_num_threads(max(1, int(ray_cpus())))
    spec = JobSpec.model_validate(spec_json)
    return ensure_judge(spec, eval_data(spec), str(pick_device(use_gpu)))


def filter_context(spec: JobSpec, judge: dict[str, Any] | None) -> dict[str, Any] | None:
    """What every sampling actor needs of ``sample.filter`` (see ShardContext.filter)."""
    f = spec.sample.filter
    if f is None or judge is None:
        return None
    return {"min_confidence": f.min_confidence, "max_attempts": f.max_attempts,
            "judge_url": judge["url"], "judge_digest": judge["digest"]}


def manifest_extra(spec: JobSpec, judge: dict[str, Any] | None, infos: list[Any]) -> dict[str, Any]:
    """Manifest keys beyond the standard ones: ``encoder`` (the PNG deflate library, version and
    level: another version may change the bytes, never the pixels) and ``filter`` (settings, judge,
    acceptance per class, added up over every shard's footer, including shards an earlier run of
    this spec wrote)."""
    extra: dict[str, Any] = {}
    if spec.sample.format == "png":
        from pipeline.publish.schema import encoder_info

        extra["encoder"] = encoder_info()
    if spec.sample.filter is not None and judge is not None:
        from pipeline.sample.filter import FilterStats

        stats = FilterStats()
        for info in infos:
            if info.filter_stats is not None:
                stats.add(FilterStats.from_json(info.filter_stats))
        tried, accepted = sum(stats.tried.values()), sum(stats.accepted.values())
        extra["filter"] = {
            "min_confidence": spec.sample.filter.min_confidence, "max_attempts": spec.sample.filter.max_attempts,
            "judge": {k: judge[k] for k in ("digest", "key", "test_acc", "num_train")},
            "acceptance_rate_overall": round(accepted / tried, 4) if tried else None,
            **stats.to_json(),
        }
    return extra


def evaluate_checkpoint(spec: JobSpec, data: Any, ckpt_url: str, rep: Any,
                        judge: dict[str, Any] | None = None, res: Any = None) -> dict[str, Any]:
    """Measure sample quality in the cluster, on the sampler's kind of device (with ``judge``: of
    the images ``sample.filter`` keeps, which is what would be published)."""
    import ray

    from pipeline.plan import eval_resources

    res = res or eval_resources(spec)
    task = ray.remote(_evaluate_task).options(num_cpus=res.bundle["CPU"], num_gpus=res.bundle.get("GPU", 0))
    rep.message(f"evaluating {spec.gate.eval_images} samples against the real test split ...")
    metrics = ray.get(task.remote(spec.model_dump(mode="json"), ckpt_url, res.uses_gpu, filter_context(spec, judge)))
    rep.message("quality: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def _evaluate_task(spec_json: dict[str, Any], ckpt_url: str, use_gpu: bool,
                   filter_ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    from pipeline.evaluate import ProbeRecipe, RealSplit, evaluate_quality
    from pipeline.publish.storage import join
    from pipeline.sample.generate import pick_device

    torch.set_num_threads(max(1, int(ray_cpus())))
    spec = JobSpec.model_validate(spec_json)
    data = eval_data(spec)
    device = pick_device(use_gpu)
    synth, labels, filter_stats = eval_samples(spec, ckpt_url, data.num_classes, device, filter_ctx)
    all_y = None if data.all_train_y is None else data.all_train_y.numpy()
    real = RealSplit.checked(data.train_u8(), data.train_y.numpy(), data.test_u8(), data.test_y.numpy(),
                             data.num_classes, data.all_train_u8(), all_y)
    g = spec.gate
    metrics = evaluate_quality(
        real, synth, labels, cache_url=join(spec.storage, "_cache", "features"),
        dataset_key=data.key, seed=spec.train.seed, storage_options=spec.storage_options,
        device=str(device), recipe=ProbeRecipe(kind=g.probe), seeds=g.seeds,
        distill_fraction=g.distill_fraction, synthetic_ratio=g.synthetic_ratio, executor=eval_executor(device),
    )
    if filter_stats is not None:  # what the filter kept of the evaluation's own draw
        metrics["filter_acceptance_rate"] = round(sum(filter_stats.accepted.values())
                                                  / max(1, sum(filter_stats.tried.values())), 4)
        metrics["filter_forced"] = int(sum(filter_stats.forced.values()))
    return metrics


def eval_executor(device: Any) -> Any:
    """Where the evaluation's classifiers train: on a CPU, side by side as one-CPU Ray tasks (this
    task lends its own CPU back while it waits); on a GPU, one after the other on it."""
    from pipeline.evaluate.executor import SERIAL, RayTasks

    return RayTasks(num_cpus=1) if str(device) == "cpu" else SERIAL


def eval_samples(spec: JobSpec, ckpt_url: str, num_classes: int, device: Any,
                 filter_ctx: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """The gate's ``gate.eval_images`` samples (uint8 NHWC, labels spread evenly over the classes),
    from seeds apart from the published ones: a held-out draw, the same for every evaluation.
    With ``filter_ctx`` (:func:`filter_context`) they go through ``sample.filter`` as published
    rows do; returns (images, labels, FilterStats or None)."""
    import numpy as np

    from pipeline.sample.generate import generate_u8, load_generator
    from pipeline.sample.plan import image_seeds, spread_labels

    fam, _ = load_generator(ckpt_url, spec, device)
    n = spec.gate.eval_images
    labels = spread_labels({k: n // num_classes + (k < n % num_classes) for k in range(num_classes)})
    seeds = image_seeds(spec.train.seed + 7919, 0, n)

    def draw(s: Any, y: Any) -> Any:
        return generate_u8(fam, s, y, batch_size=spec.sample.batch_size, bf16=spec.train.bf16)

    if filter_ctx is None:
        return draw(seeds, labels), np.asarray(labels), None
    from pipeline.sample.filter import filtered_generate, load_judge

    judge = load_judge(filter_ctx["judge_url"], filter_ctx["judge_digest"], spec.storage_options, device)
    synth, _, stats = filtered_generate(draw, judge, seeds, labels, min_confidence=filter_ctx["min_confidence"],
                                        max_attempts=filter_ctx["max_attempts"])
    return synth, np.asarray(labels), stats


#: real training images held in memory for evaluation of a streamed dataset (memorization, uplift)
EVAL_TRAIN_CAP = 20_000


def eval_data(spec: JobSpec) -> Any:
    """Real data for evaluation (:meth:`DataSource.eval_split`): the in-memory dataset, or for a
    streamed one its own test split and the first ``EVAL_TRAIN_CAP`` images of its train split."""
    from pipeline.data.source import open_source

    return open_source(spec.dataset).eval_split(EVAL_TRAIN_CAP)


def ray_cpus() -> float:
    import ray

    if not ray.is_initialized():
        return float(os.cpu_count() or 1)
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
