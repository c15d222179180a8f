"""Schedules: logical dates, catch-up, lease, crash recovery, retention, install snippets.

Fast: an injected clock, no Ray; state on tmp_path, memory:// and (one test) a real S3 endpoint.
"""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import threading
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import fsspec
import pytest
import yaml

from pipeline.schedule import (
    Lease,
    ScheduleState,
    check_cron,
    check_timezone,
    due_dates,
    emit,
    next_runs,
    retention_victims,
    run_due,
)
from pipeline.schedule.emit import _on_calendar
from pipeline.schedule.lease import _create_exclusive
from pipeline.spec import JobSpec, ScheduleSpec

BERLIN = ZoneInfo("Europe/Berlin")


def job(cron: str = "0 2 * * *", **kw) -> JobSpec:
    return JobSpec(name="nightly", schedule=ScheduleSpec(cron=cron, **kw))


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


@pytest.fixture
def state_url() -> str:
    return f"memory://sched-{uuid.uuid4().hex}"


class Recorder:
    """A run_one that records calls and can fail on chosen dates."""

    def __init__(self, fail_on: set[date] = frozenset()):
        self.calls: Counter[date] = Counter()
        self.fail_on = set(fail_on)

    def __call__(self, d: date) -> dict:
        self.calls[d] += 1
        if d in self.fail_on:
            raise RuntimeError(f"boom on {d}")
        return {"submission_id": f"nightly-{d}"}


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", ["", "0 2 * *", "0 2 * * * *", "61 2 * * *", "0 2 L * *", "0 2 * * 1#2",
                                 "H 2 * * *", "0 2 ? * *", "5/15 * * * *", "0 0 */2 * 1", "0 0 30 2 *", "0 2 * * xyz"])
def test_bad_cron_names_the_field(bad):
    with pytest.raises(ValueError, match=r"^schedule\.cron: "):
        check_cron(bad)


def test_good_cron_normalized():
    assert check_cron(" 0  2 * *  * ") == "0 2 * * *"
    assert check_cron("@daily") == "0 0 * * *"
    assert check_cron("*/15 8-18 1,15 jan-mar mon-fri") == "*/15 8-18 1,15 jan-mar mon-fri"


@pytest.mark.parametrize("bad", ["", "Mars/Olympus", "utc", "../etc/passwd", "localtime"])
def test_bad_timezone_names_the_field(bad):
    with pytest.raises(ValueError, match=r"^schedule\.timezone: "):
        check_timezone(bad)
    # the spec refuses it at load time, naming the field
    from pipeline.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "x", "schedule": {"cron": "0 2 * * *", "timezone": bad}})
    assert exc.value.problems[0].startswith("schedule.timezone: ")


def test_naive_now_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        due_dates(ScheduleSpec(cron="0 2 * * *"), datetime(2025, 1, 1), set())


# ---------------------------------------------------------------- logical dates
def test_first_run_runs_exactly_the_latest_due_date(state_url):
    rec = Recorder()
    res = run_due(job(catchup_days=3), now=utc(2025, 1, 10, 12), run_one=rec, state_url=state_url)
    assert res.ran == [date(2025, 1, 10)] and dict(rec.calls) == {date(2025, 1, 10): 1}
    assert res.failed == {} and res.skipped == [] and res.lease_held_by is None
    again = run_due(job(catchup_days=3), now=utc(2025, 1, 10, 23), run_one=rec, state_url=state_url)
    assert again.ran == [] and sum(rec.calls.values()) == 1


def test_missed_days_caught_up_within_window_not_beyond(state_url):
    rec = Recorder()
    run_due(job(catchup_days=3), now=utc(2025, 1, 1, 3), run_one=rec, state_url=state_url)
    res = run_due(job(catchup_days=3), now=utc(2025, 1, 10, 12), run_one=rec, state_url=state_url)
    assert res.ran == [date(2025, 1, d) for d in (7, 8, 9, 10)]  # oldest first; Jan 2-6 are beyond the window
    assert set(rec.calls) == {date(2025, 1, d) for d in (1, 7, 8, 9, 10)}
    sched = ScheduleSpec(cron="0 2 * * *", catchup_days=0)
    assert due_dates(sched, utc(2025, 1, 10, 12), {date(2025, 1, 1)}) == [date(2025, 1, 10)]


def test_nothing_due_before_the_first_fire_time_of_the_day():
    sched, done = ScheduleSpec(cron="0 2 * * *"), {date(2025, 1, 9)}
    assert due_dates(sched, utc(2025, 1, 10, 1, 59, 59), done) == []
    assert due_dates(sched, utc(2025, 1, 10, 2), done) == [date(2025, 1, 10)]  # fire time <= now
    assert due_dates(sched, utc(2025, 1, 10, 1, 59), set()) == [date(2025, 1, 9)]


def test_weekly_and_multi_fire_crons_map_to_dates():
    weekly = ScheduleSpec(cron="0 6 * * mon", catchup_days=20)
    assert due_dates(weekly, utc(2025, 1, 22), {date(2024, 12, 30)}) == [date(2025, 1, d) for d in (6, 13, 20)]
    hourly = ScheduleSpec(cron="0 * * * *", catchup_days=2)
    assert due_dates(hourly, utc(2025, 1, 10, 5), {date(2025, 1, 1)}) == [date(2025, 1, d) for d in (8, 9, 10)]


def test_timezone_berlin_vs_utc_now():
    sched, done = ScheduleSpec(cron="0 2 * * *", timezone="Europe/Berlin"), {date(2025, 1, 9)}
    assert due_dates(sched, utc(2025, 1, 10, 0, 59), done) == []  # 01:59 CET
    assert due_dates(sched, utc(2025, 1, 10, 1, 0), done) == [date(2025, 1, 10)]  # 02:00 CET
    summer = {date(2025, 7, 9)}
    assert due_dates(sched, utc(2025, 7, 9, 23, 59), summer) == []  # 01:59 CEST on Jul 10
    assert due_dates(sched, utc(2025, 7, 10, 0, 0), summer) == [date(2025, 7, 10)]  # 02:00 CEST
    # the logical date is the Berlin date even while it is still the previous day in UTC
    late = ScheduleSpec(cron="30 0 * * *", timezone="Europe/Berlin")
    assert due_dates(late, utc(2025, 1, 9, 23, 45), {date(2025, 1, 9)}) == [date(2025, 1, 10)]


def test_dst_spring_forward_still_has_the_date():
    sched = ScheduleSpec(cron="0 2 * * *", timezone="Europe/Berlin")  # 02:00 does not exist on 2025-03-30
    done = {date(2025, 3, 29)}
    assert due_dates(sched, utc(2025, 3, 30, 0, 59), done) == []  # 01:59 CET
    assert due_dates(sched, utc(2025, 3, 30, 1, 0), done) == [date(2025, 3, 30)]  # 03:00 CEST, after the jump


@pytest.mark.parametrize("start", [utc(2025, 3, 27), utc(2025, 10, 23)])
def test_hourly_triggers_across_dst_run_each_date_once(state_url, start):
    rec, spec = Recorder(), job(timezone="Europe/Berlin", catchup_days=2)
    for h in range(7 * 24):
        run_due(spec, now=start + timedelta(hours=h, minutes=5), run_one=rec, state_url=state_url)
    first = due_dates(spec.schedule, start + timedelta(minutes=5), set())[0]
    last = (start + timedelta(days=7)).date() - timedelta(days=1)
    assert dict(rec.calls) == {first + timedelta(days=i): 1 for i in range((last - first).days + 1)}


def test_next_runs_after_now_and_fall_back_once():
    sched = ScheduleSpec(cron="0 2 * * *", timezone="Europe/Berlin")
    runs = next_runs(sched, utc(2025, 10, 24, 12), count=4)
    assert [r.date() for r in runs] == [date(2025, 10, d) for d in (25, 26, 27, 28)]
    assert all(r.tzinfo is not None and r.hour == 2 for r in runs)
    assert next_runs(ScheduleSpec(cron="0 2 * * *"), utc(2025, 1, 1, 2))[0] == utc(2025, 1, 2, 2)


# ---------------------------------------------------------------- lease
def test_overlapping_trigger_refused_by_lease(state_url):
    inner: list = []

    def run_one(d: date) -> None:
        inner.append(run_due(job(), now=utc(2025, 1, 10, 12), run_one=Recorder(), state_url=state_url))

    outer = run_due(job(), now=utc(2025, 1, 10, 12), run_one=run_one, state_url=state_url, owner="outer")
    assert outer.ran == [date(2025, 1, 10)]
    assert inner[0].lease_held_by == "outer" and inner[0].ran == [] and inner[0].failed == {}
    fs = fsspec.filesystem("memory")  # released afterwards
    assert not fs.exists(f"{state_url.removeprefix('memory://')}/schedule/nightly/lease.json")


def test_expired_lease_is_taken_over(state_url):
    t0, spec = utc(2025, 1, 10, 3), job(lease_seconds=3600)
    dead = Lease.for_job(state_url, "nightly", "crashed-host", 3600, clock=lambda: t0)
    assert dead.acquire()  # ...and its process dies without releasing
    rec = Recorder()
    res = run_due(spec, now=t0 + timedelta(minutes=10), run_one=rec, state_url=state_url)
    assert res.lease_held_by == "crashed-host" and res.ran == [] and not rec.calls
    res = run_due(spec, now=t0 + timedelta(seconds=3601), run_one=rec, state_url=state_url)
    assert res.ran == [date(2025, 1, 10)] and res.lease_held_by is None
    assert not dead.renew() and not dead.release()  # it lost the lease: no heartbeat, no release


def test_lease_renew_release_only_by_owner(tmp_path):
    now = [utc(2025, 1, 1)]
    a = Lease.for_job(str(tmp_path), "j", "a", 600, clock=lambda: now[0])
    b = Lease.for_job(str(tmp_path), "j", "b", 600, clock=lambda: now[0])
    assert a.acquire() and not b.acquire() and b.held_by == "a"
    assert not b.release() and a.read()["owner"] == "a"
    now[0] += timedelta(seconds=500)
    assert a.renew()  # heartbeat pushes the expiry
    now[0] += timedelta(seconds=500)
    assert not b.acquire() and b.held_by == "a"
    assert a.release() and a.read() is None
    assert b.acquire()


@pytest.mark.parametrize("expired", [False, True])
def test_lease_race_has_one_winner(tmp_path, expired):
    t0 = utc(2025, 1, 1)
    if expired:
        assert Lease.for_job(str(tmp_path), "j", "dead", 600, clock=lambda: t0).acquire()
    later = t0 + timedelta(seconds=601 if expired else 0)
    leases = [Lease.for_job(str(tmp_path), "j", f"w{i}", 600, clock=lambda: later) for i in range(16)]
    barrier, wins = threading.Barrier(len(leases)), []

    def go(lease: Lease) -> None:
        barrier.wait()
        if lease.acquire():
            wins.append(lease.owner)

    threads = [threading.Thread(target=go, args=(le,)) for le in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and leases[0].read()["owner"] == wins[0]
    assert sorted(p.name for p in (tmp_path / "schedule" / "j").iterdir()) == ["lease.json"]


def test_takeover_survives_a_claimant_that_died(state_url):
    t0 = utc(2025, 1, 1)
    dead = Lease.for_job(state_url, "j", "dead", 600, clock=lambda: t0)
    assert dead.acquire()
    fs = fsspec.filesystem("memory")
    stuck = {"owner": "died-mid-takeover", "token": "x", "expires_at": (t0 + timedelta(seconds=660)).isoformat()}
    fs.pipe_file(f"{dead.path}.takeover-{dead.token}-0", json.dumps(stuck).encode())
    mid = Lease.for_job(state_url, "j", "new", 600, clock=lambda: t0 + timedelta(seconds=601))
    assert not mid.acquire() and mid.held_by == "died-mid-takeover"  # its claim is still fresh
    new = Lease.for_job(state_url, "j", "new", 600, clock=lambda: t0 + timedelta(seconds=700))
    assert new.acquire() and new.read()["owner"] == "new"


def test_lease_on_real_s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://{host}:{port}",
                                                                         "region_name": "us-west-2"}}
        fs = fsspec.filesystem("s3", **opts)
        fs.mkdir("sched-bucket")
        t0 = utc(2025, 1, 1)
        a = Lease.for_job("s3://sched-bucket/state", "j", "a", 600, opts, clock=lambda: t0)
        b = Lease.for_job("s3://sched-bucket/state", "j", "b", 600, opts, clock=lambda: t0)
        assert a.acquire() and not b.acquire() and b.held_by == "a"
        # create-only is the conditional PUT itself (If-None-Match: *), not a check-then-write
        assert _create_exclusive(fs, "sched-bucket/x.json", b"1") and not _create_exclusive(fs, "sched-bucket/x.json", b"2")
        assert fs.cat_file("sched-bucket/x.json") == b"1"
        late = Lease.for_job("s3://sched-bucket/state", "j", "c", 600, opts, clock=lambda: t0 + timedelta(hours=1))
        assert late.acquire() and late.read()["owner"] == "c"
        assert fs.ls("sched-bucket/state/schedule/j", refresh=True) == ["sched-bucket/state/schedule/j/lease.json"]
        rec = Recorder()
        res = run_due(job(), now=utc(2025, 1, 10, 12), run_one=rec, state_url="s3://sched-bucket/s2",
                      storage_options=opts)
        assert res.ran == [date(2025, 1, 10)]
        assert json.loads(fs.cat_file("sched-bucket/s2/schedule/nightly/state.json"))["dates"]
    finally:
        server.stop()


def test_lease_lost_while_running_records_nothing(state_url):
    now, spec = utc(2025, 1, 10, 3), job(lease_seconds=3600)

    def slow(d: date) -> None:  # meanwhile the lease expires and another trigger takes it over
        thief = Lease.for_job(state_url, "nightly", "thief", 3600, clock=lambda: now + timedelta(hours=2))
        assert thief.acquire()

    res = run_due(spec, now=now, run_one=slow, state_url=state_url)
    assert res.ran == [] and "lease lost" in res.failed[date(2025, 1, 10)] and res.lease_held_by == "thief"
    state = ScheduleState(state_url, "nightly").load()
    assert state.done_dates() == set() and state.first_date == date(2025, 1, 10)
    assert Lease.for_job(state_url, "nightly", "x", 3600).read()["owner"] == "thief"  # not released by the loser


def test_keep_alive_heartbeat_pushes_expiry(tmp_path):
    t = [utc(2025, 1, 1)]
    lease = Lease.for_job(str(tmp_path), "j", "a", 600, clock=lambda: t[0])
    assert lease.acquire()
    first = lease.read()["expires_at"]
    t[0] += timedelta(seconds=300)
    with lease.keep_alive(interval=0.01):
        deadline = datetime.now() + timedelta(seconds=5)
        while lease.read()["expires_at"] == first and datetime.now() < deadline:
            pass
    assert lease.read()["expires_at"] == (t[0] + timedelta(seconds=600)).isoformat() and lease.held


# ---------------------------------------------------------------- crash recovery
def test_crash_mid_run_then_next_trigger_completes(tmp_path):
    url, D = str(tmp_path), date(2025, 1, 8)
    rec = Recorder(fail_on={D})
    run_due(job(), now=utc(2025, 1, 5, 3), run_one=rec, state_url=url)
    res = run_due(job(), now=utc(2025, 1, 9, 3), run_one=rec, state_url=url)
    assert res.ran == [date(2025, 1, 6), date(2025, 1, 7)] and list(res.failed) == [D]
    assert "boom" in res.failed[D] and res.skipped == [date(2025, 1, 9)]
    state = json.loads((tmp_path / "schedule" / "nightly" / "state.json").read_text())
    assert state["dates"][str(D)]["status"] == "failed" and D not in ScheduleState(url, "nightly").load().done_dates()
    rec.fail_on.clear()
    res = run_due(job(), now=utc(2025, 1, 9, 4), run_one=rec, state_url=url)
    assert res.ran == [D, date(2025, 1, 9)] and res.failed == {}
    assert dict(rec.calls) == {date(2025, 1, 5): 1, date(2025, 1, 6): 1, date(2025, 1, 7): 1, D: 2,
                               date(2025, 1, 9): 1}
    assert not (tmp_path / "schedule" / "nightly" / "lease.json").exists()


def test_failed_first_run_is_caught_up_next_day(state_url):
    rec = Recorder(fail_on={date(2025, 1, 10)})
    assert run_due(job(), now=utc(2025, 1, 10, 3), run_one=rec, state_url=state_url).failed
    rec.fail_on.clear()
    res = run_due(job(), now=utc(2025, 1, 11, 3), run_one=rec, state_url=state_url)
    assert res.ran == [date(2025, 1, 10), date(2025, 1, 11)]


def test_interrupt_releases_lease_and_records_nothing(state_url):
    def killed(d: date) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_due(job(), now=utc(2025, 1, 10, 3), run_one=killed, state_url=state_url)
    rec = Recorder()
    assert run_due(job(), now=utc(2025, 1, 10, 4), run_one=rec, state_url=state_url).ran == [date(2025, 1, 10)]


# ---------------------------------------------------------------- retention
def test_retention_victims_rules():
    d = [date(2025, 1, i) for i in range(1, 8)]
    assert retention_victims(d, d, 3) == d[:4]
    assert retention_victims(d, d[:2], 3) == []  # fewer than N succeeded: remove nothing
    assert retention_victims(d, [d[1], d[3], d[4]], 2) == d[:3]  # d[5], d[6] (not succeeded, newer) stay
    assert retention_victims([d[0]], [d[0]], 1) == []  # never the newest


def test_retention_after_success_only(state_url):
    partitions: set[date] = {date(2024, 12, 1)}  # an old manual run: not counted, removed once older than all kept
    fail_on: set[date] = set()

    def run_one(d: date) -> None:
        partitions.add(d)  # the partition appears (even partially) before success is known
        if d in fail_on:
            raise RuntimeError("gate failed")

    kw = dict(run_one=run_one, state_url=state_url, list_partitions=lambda: sorted(partitions),
              remove_partition=partitions.discard)
    spec = job(retention=2)
    run_due(spec, now=utc(2025, 1, 1, 3), **kw)
    assert partitions == {date(2024, 12, 1), date(2025, 1, 1)}  # only one succeeded: nothing removed
    res = run_due(spec, now=utc(2025, 1, 2, 3), **kw)
    assert res.removed_partitions == ["2024-12-01"] and partitions == {date(2025, 1, 1), date(2025, 1, 2)}
    fail_on.add(date(2025, 1, 3))
    res = run_due(spec, now=utc(2025, 1, 3, 3), **kw)
    assert res.failed and res.removed_partitions == []  # failure: keep everything
    assert partitions == {date(2025, 1, d) for d in (1, 2, 3)}
    fail_on.clear()
    res = run_due(spec, now=utc(2025, 1, 4, 3), **kw)
    assert res.ran == [date(2025, 1, 3), date(2025, 1, 4)] and res.removed_partitions == ["2025-01-01", "2025-01-02"]
    assert partitions == {date(2025, 1, 3), date(2025, 1, 4)}
    state = ScheduleState(state_url, "nightly").load()
    assert state.live_dates() == {date(2025, 1, 3), date(2025, 1, 4)} and date(2025, 1, 1) in state.done_dates()


def test_retention_goes_through_partition_manifest_first_and_updates_the_card(tmp_path, state_url, monkeypatch):
    """The default list / remove of run_due (what ``genpipe schedule run-due`` uses): published
    partitions only, removal through Partition.remove (the manifest before any data file), the
    dataset card rewritten; a stray folder with an impossible date does not stop it."""
    import numpy as np

    from pipeline.publish.partition import Partition
    from pipeline.publish.provenance import Provenance
    from pipeline.publish.schema import build_table
    from pipeline.schedule.run import job_partitions

    out = str(tmp_path / "out")
    spec = JobSpec(name="nightly", schedule=ScheduleSpec(cron="0 2 * * *", retention=2),
                   sample={"output": out, "num_images": 4, "shard_size": 4})
    prov = Provenance("p" * 64, "c" * 64)

    def run_one(d: date) -> None:  # a tiny publish of the date, as a job would
        part = Partition.of(out, spec.name, d.isoformat())
        t = build_table(np.zeros((4, 2, 2, 1), np.uint8), [0, 1, 0, 1], [1, 2, 3, 4],
                        [f"nightly/{d}/{i}" for i in range(4)], 0, class_names=["a", "b"], model="m",
                        checkpoint="c", job=spec.name, date=d.isoformat(), created_at=None)
        part.publish([part.write_shard(0, 1, t, provenance=prov)], provenance=prov, spec_hash=prov.spec_hash,
                     code_version="0", num_images=4, class_names=["a", "b"])

    (tmp_path / "out" / "nightly" / "_genpipe" / "logical_date=2026-13-01").mkdir(parents=True)  # stray
    removed_first: list[str] = []
    real_remove = Partition.remove

    def remove(self: Partition) -> None:
        import os

        removed_first.append("manifest" if not os.path.exists(self.manifest_path) else "files")
        real_remove(self)
        assert not os.path.exists(self.manifest_path) and not os.path.exists(self.data_path)

    for day in (1, 2, 3):
        res = run_due(spec, now=utc(2025, 1, day, 3), run_one=run_one, state_url=state_url)
        assert not res.failed, res.failed
    list_partitions, _ = job_partitions(spec)
    assert list_partitions() == [date(2025, 1, 2), date(2025, 1, 3)]
    assert res.removed_partitions == ["2025-01-01"]
    card = (tmp_path / "out" / "nightly" / "README.md").read_text()
    assert "config_name: '2025-01-03'" in card and "2025-01-01" not in card
    monkeypatch.setattr(Partition, "remove", remove)
    res = run_due(spec, now=utc(2025, 1, 4, 3), run_one=run_one, state_url=state_url)
    assert res.removed_partitions == ["2025-01-02"] and removed_first == ["files"]  # called while published
    assert not (tmp_path / "out" / "nightly" / "data" / "logical_date=2025-01-02").exists()


# ---------------------------------------------------------------- install snippets
def test_emit_crontab():
    out = emit(job(timezone="Europe/Berlin"), "crontab", spec_path="/srv/jobs/night ly.yaml",
               address="http://head:8265")
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "CRON_TZ=Europe/Berlin"
    fields = lines[1].split(None, 5)
    assert fields[:5] == ["0", "2", "*", "*", "*"]
    argv = shlex.split(fields[5].split("|")[0])
    assert argv == ["RAY_ADDRESS=http://head:8265", "genpipe", "schedule", "run-due", "/srv/jobs/night ly.yaml", "2>&1"]
    plain = emit(job("@daily"), "crontab", spec_path="jobs/x.yaml", address=None)
    assert "CRON_TZ" not in plain and "RAY_ADDRESS" not in plain
    assert [ln for ln in plain.splitlines() if not ln.startswith("#")][0].startswith("0 0 * * * genpipe ")


def test_emit_k8s():
    doc = yaml.safe_load(emit(job("30 1 * * 1-5", timezone="America/New_York"), "k8s",
                              spec_path="/etc/genpipe/job.yaml", address="http://ray-head:8265"))
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    assert doc["metadata"]["name"] == "genpipe-nightly"
    s = doc["spec"]
    assert (s["schedule"], s["timeZone"], s["concurrencyPolicy"]) == ("30 1 * * 1-5", "America/New_York", "Forbid")
    c = s["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["genpipe", "schedule", "run-due", "/etc/genpipe/job.yaml"]
    assert {"name": "RAY_ADDRESS", "value": "http://ray-head:8265"} in c["env"]


def test_emit_systemd_units_parse():
    out = emit(job("0 3 1,15 * mon"), "systemd", spec_path="/srv/jobs/x.yaml", address="http://h:8265")
    service, timer = out.split("# --- genpipe-nightly.timer ---")
    sv = configparser.ConfigParser(strict=False, interpolation=None)
    sv.read_string(service)
    assert sv["Service"]["Type"] == "oneshot" and sv["Service"]["Environment"] == "RAY_ADDRESS=http://h:8265"
    assert sv["Service"]["ExecStart"] == "/usr/bin/env genpipe schedule run-due /srv/jobs/x.yaml"
    cal = [ln.split("=", 1)[1] for ln in timer.splitlines() if ln.startswith("OnCalendar=")]
    assert cal == ["Mon *-*-* 03:00:00 UTC", "*-*-01,15 03:00:00 UTC"]  # cron ORs the day fields
    assert "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert _on_calendar("0 2 L * *", "UTC") is None  # not expressible -> emit falls back to a frequent timer


def test_emit_never_leaks_credentials():
    spec = JobSpec(name="nightly", schedule=ScheduleSpec(cron="0 2 * * *"), storage_options={"secret": "S3CR3T"})
    for fmt in ("crontab", "systemd", "k8s"):
        assert "S3CR3T" not in emit(spec, fmt, spec_path="jobs/x.yaml", address=None)
    with pytest.raises(ValueError, match="format"):
        emit(spec, "launchd", spec_path="x", address=None)  # type: ignore[arg-type]


def _systemd_elapses(cal: list[str], base: datetime, n: int) -> set[datetime]:
    out: set[datetime] = set()
    for c in cal:
        text = subprocess.run(["systemd-analyze", "calendar", f"--iterations={n}", f"--base-time=@{int(base.timestamp())}",
                               c], capture_output=True, text=True, check=True).stdout
        for ln in text.splitlines():
            ln = ln.strip()
            if ln.startswith(("Next elapse:", "Iter. #")):
                out.add(datetime.strptime(ln.split(": ", 1)[1], "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC))
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("cron,tz,base", [
    ("0 2 * * *", "Europe/Berlin", utc(2026, 3, 20)),  # spring forward: 02:00 does not exist on Mar 29
    ("30 2 * * 1-5", "America/New_York", utc(2026, 3, 1)),
    ("0 3 1,15 * mon", "UTC", utc(2026, 1, 1)),
    ("*/20 9-10 * * *", "Asia/Tokyo", utc(2026, 1, 1)),
])
def test_systemd_timer_covers_every_cron_fire_time(cron, tz, base):
    cal, _ = _on_calendar(check_cron(cron), tz)
    fires = {t.astimezone(UTC) for t in next_runs(ScheduleSpec(cron=cron, timezone=tz), base, count=20)}
    elapses = _systemd_elapses(cal, base, 40)
    horizon = max(fires)
    assert fires <= elapses  # every cron fire time triggers the timer at the same instant
    extra = {e for e in elapses if e <= horizon} - fires
    if tz in ("UTC", "Asia/Tokyo"):
        assert not extra  # exact where no DST gap exists
