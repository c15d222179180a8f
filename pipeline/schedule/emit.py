"""Install snippets for the outside trigger of ``genpipe schedule run-due``: crontab, systemd
timer (with DST gaps checked) and Kubernetes CronJob."""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import yaml

from pipeline.schedule.cron import _DOW, check_cron, check_timezone, field_values

if TYPE_CHECKING:
    from pipeline.spec import JobSpec


def _dst_gaps(cron: str, tz: str, days: int = 800) -> dict[dtime, datetime]:
    """Wall times of the cron that a DST jump in ``tz`` skips over the next ``days`` days.

    Maps the wall time just after each gap (where cron and croniter run the skipped job) to an
    example skipped fire time. Conservative: day fields are ignored.
    """
    z = ZoneInfo(tz)
    values = field_values(cron)
    mins, hours, out = sorted(values[0]), sorted(values[1]), {}

    def exists(w: datetime) -> bool:
        return w.replace(tzinfo=z).astimezone(UTC).astimezone(z).replace(tzinfo=None) == w

    start = date.today()
    for i in range(days):
        d = start + timedelta(days=i)
        before = datetime.combine(d, dtime(0), tzinfo=z).utcoffset()
        if before is None or datetime.combine(d + timedelta(days=1), dtime(0), tzinfo=z).utcoffset() <= before:
            continue
        for w in (datetime.combine(d, dtime(h, m)) for h in hours for m in mins):
            if not exists(w):
                end = w
                while not exists(end):
                    end += timedelta(minutes=1)
                out.setdefault(end.time(), w)
    return out


def _on_calendar(cron: str, tz: str) -> tuple[list[str], list[str]] | None:
    """systemd ``OnCalendar=`` values for a 5-field cron, and comment lines; None if not expressible.

    Cron ORs day-of-month and day-of-week when both are restricted: that becomes two lines.
    systemd skips a wall time that a DST jump removes, where cron runs it right after the jump:
    such schedules get one more line at the end of the gap (a no-op trigger on other days).
    """
    try:
        fields = cron.split()
        mins, hours, doms, months, dows = field_values(cron)
        gaps = _dst_gaps(cron, tz)
    except (ValueError, KeyError):
        return None

    def lst(vals: set[int], full: range) -> str:
        return "*" if vals == set(full) else ",".join(f"{v:02d}" for v in sorted(vals))

    def lines(hm: str) -> list[str]:
        mon, days = lst(months, range(1, 13)), ",".join(_DOW[v] for v in sorted(dows))
        if not fields[2].startswith("*") and not fields[4].startswith("*"):
            return [f"{days} *-{mon}-* {hm} {tz}", f"*-{mon}-{lst(doms, range(1, 32))} {hm} {tz}"]
        prefix = "" if dows == set(range(7)) else f"{days} "
        return [f"{prefix}*-{mon}-{lst(doms, range(1, 32))} {hm} {tz}"]

    cal = lines(f"{lst(hours, range(24))}:{lst(mins, range(60))}:00")
    notes = []
    for end, skipped in sorted(gaps.items()):
        notes = [f"# Not exact in {tz}: DST skips fire times (e.g. {skipped:%Y-%m-%d %H:%M}); systemd would",
                 "# skip that date's trigger, cron runs it when the clock jumps. The extra line(s) fire",
                 "# at the end of the gap; on other days run-due finds nothing due (idempotent)."]
        cal += [c for c in lines(end.strftime("%H:%M:00")) if c not in cal]
    return cal, notes


def _sd_quote(s: str) -> str:
    return s if re.fullmatch(r"[\w@%+=:,./-]+", s) else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def emit(spec: JobSpec, fmt: Literal["crontab", "systemd", "k8s"], *, spec_path: str,
         address: str | None = None) -> str:
    """Install snippet that triggers ``genpipe schedule run-due <spec_path>`` on the job's cron.

    Any trigger that fires at or after each fire time works: run-due works out the due dates
    itself, is idempotent, and refuses overlaps, so a late or extra trigger is harmless.
    Credentials (``storage_options``) are never written into a snippet.
    """
    if spec.schedule is None:
        raise ValueError(f"job {spec.name!r} has no schedule: section")
    cron, tz = check_cron(spec.schedule.cron), check_timezone(spec.schedule.timezone)
    argv = ["genpipe", "schedule", "run-due", spec_path]
    unit = f"genpipe-{spec.name}"
    if fmt == "crontab":
        env = f"RAY_ADDRESS={json.dumps(address)} " if address else ""
        cmd = " ".join(shlex.quote(a) for a in argv).replace("%", "\\%")
        lines = [f"# genpipe schedule for job {spec.name}: add with `crontab -e`. Use an absolute spec path",
                 "# and genpipe's full path if it is not on cron's PATH."]
        if tz != "UTC":
            lines += ["# CRON_TZ needs cronie (RHEL, Fedora, Arch) and applies to every later line;",
                      "# Debian/Ubuntu cron ignores it: there use the systemd timer instead.", f"CRON_TZ={tz}"]
        return "\n".join([*lines, f"{cron} {env}{cmd} 2>&1 | logger -t {unit}"]) + "\n"
    if fmt == "systemd":
        cal, note = _on_calendar(cron, tz) or (["*:0/15"], [
            f"# cron {cron!r} has no exact OnCalendar equivalent: fire every 15 minutes instead;",
            "# run-due is idempotent and runs only the dates that are due."])
        env = [f"Environment={_sd_quote('RAY_ADDRESS=' + address)}"] if address else []
        service = ["# --- " + unit + ".service ---", "[Unit]", f"Description=genpipe run-due for job {spec.name}",
                   "Wants=network-online.target", "After=network-online.target", "", "[Service]",
                   "Type=oneshot", *env, "ExecStart=/usr/bin/env " + " ".join(_sd_quote(a) for a in argv)]
        timer = ["# --- " + unit + ".timer ---", f"# enable: systemctl enable --now {unit}.timer", "[Unit]",
                 f"Description=genpipe schedule for job {spec.name} (cron '{cron}' {tz})", "", "[Timer]",
                 *note, *(f"OnCalendar={c}" for c in cal), "Persistent=true", f"Unit={unit}.service", "",
                 "[Install]", "WantedBy=timers.target"]
        return "\n".join(service + [""] + timer) + "\n"
    if fmt == "k8s":
        name = re.sub(r"[^a-z0-9-]", "-", unit)[:52].rstrip("-")
        container: dict[str, Any] = {"name": "run-due", "image": "genpipe:latest", "command": argv}
        if address:
            container["env"] = [{"name": "RAY_ADDRESS", "value": address}]
        manifest = {
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "genpipe", "genpipe/job": spec.name}},
            "spec": {"schedule": cron, "timeZone": tz, "concurrencyPolicy": "Forbid",
                     "startingDeadlineSeconds": 3600, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                     "jobTemplate": {"spec": {"backoffLimit": 1, "template": {"spec": {
                         "restartPolicy": "Never", "containers": [container]}}}}},
        }
        head = [f"# genpipe schedule for job {spec.name}: kubectl apply -f <this file> (Kubernetes >= 1.27",
                "# for timeZone). Set image to one with genpipe installed and the spec at the given path",
                "# (baked in or mounted from a ConfigMap); give storage credentials via a Secret (envFrom)."]
        return "\n".join(head) + "\n" + yaml.safe_dump(manifest, sort_keys=False)
    raise ValueError(f"unknown format {fmt!r}: expected 'crontab', 'systemd' or 'k8s'")
