"""Per-process CPU time and RSS from ``/proc`` (Linux), summed over groups of processes.

A :class:`CpuMeter` samples a set of processes now and then (a daemon thread), keeps the
last CPU time seen for every process (keyed by pid and start time, so a reused pid is a new
process), and so still counts processes that exit before the end of a measurement (e.g. a
PostgreSQL backend whose connection closed), up to the last sample before they exited.
Reaped children's time (``cutime``) is not used: the postmaster reaps the backends of every
database on the server, not only ours.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    session: int
    cpu_s: float  # utime + stime
    child_cpu_s: float  # cutime + cstime (waited-for children)
    start: int  # start time in ticks since boot
    rss: int  # bytes


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        return None
    lpar, rpar = data.index("("), data.rindex(")")
    comm = data[lpar + 1 : rpar]
    f = data[rpar + 2 :].split()
    # fields after comm: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)
    # cutime(13) cstime(14) ... starttime(19) vsize(20) rss(21)
    return ProcStat(
        pid=pid,
        comm=comm,
        ppid=int(f[1]),
        session=int(f[3]),
        cpu_s=(int(f[11]) + int(f[12])) / TICK,
        child_cpu_s=(int(f[13]) + int(f[14])) / TICK,
        start=int(f[19]),
        rss=int(f[21]) * PAGE,
    )


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_stats() -> list[ProcStat]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out.append(st)
    return out


def session_pids(sid: int) -> list[int]:
    """Every process in session ``sid`` (a worker started with ``start_new_session``)."""
    return [st.pid for st in all_stats() if st.session == sid]


def session_rss(sid: int) -> int:
    """Total RSS (bytes) of every process in a session."""
    return sum(st.rss for st in all_stats() if st.session == sid)


def find_pids(pred: Callable[[ProcStat, str], bool]) -> list[int]:
    return [st.pid for st in all_stats() if pred(st, cmdline(st.pid))]


def redis_pids() -> list[int]:
    return find_pids(lambda st, cmd: st.comm == "redis-server" and ":6379" in cmd)


def postgres_pids(database: str) -> list[int]:
    """The postmaster, its auxiliary processes, and the backends of ``database`` only."""
    aux = ("checkpointer", "background writer", "walwriter", "autovacuum", "wal writer")

    def match(st: ProcStat, cmd: str) -> bool:
        if st.comm != "postgres":
            return False
        if cmd.startswith("/") and " -D " in cmd:  # the postmaster
            return True
        if any(a in cmd for a in aux):
            return True
        return f" {database} " in cmd

    return find_pids(match)


Group = Callable[[], list[int]]


class CpuMeter:
    """CPU seconds used by named groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, Group], interval: float = 0.5) -> None:
        self.groups = groups
        self.interval = interval
        self._first: dict[str, dict[tuple[int, int], float]] = {g: {} for g in groups}
        self._last: dict[str, dict[tuple[int, int], float]] = {g: {} for g in groups}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    def _sample(self) -> None:
        for name, group in self.groups.items():
            for pid in group():
                st = read_stat(pid)
                if st is None:
                    continue
                key = (pid, st.start)
                if key not in self._first[name]:
                    # A process seen for the first time after the start began at zero CPU.
                    self._first[name][key] = st.cpu_s if not self._started else 0.0
                self._last[name][key] = st.cpu_s

    def _run(self) -> None:
        deadline = time.monotonic() + 6 * 3600
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            self._sample()

    def start(self) -> CpuMeter:
        self._sample()
        self._started = True
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-meter")
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds used by each group since :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        out = {}
        for name in self.groups:
            total = 0.0
            for key, last in self._last[name].items():
                total += last - self._first[name][key]
            out[name] = max(0.0, total)
        return out


class RssMeter:
    """Samples total RSS of a session (a worker and its children) and keeps the peak."""

    def __init__(self, sids: Callable[[], list[int]], interval: float = 0.5) -> None:
        self.sids = sids
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-meter")

    def now(self) -> int:
        sids = set(self.sids())
        return sum(st.rss for st in all_stats() if st.session in sids)

    def _run(self) -> None:
        deadline = time.monotonic() + 6 * 3600
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            self.peak = max(self.peak, self.now())

    def start(self) -> RssMeter:
        self.peak = self.now()
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak
