"""Memory and CPU figures of a process, read from ``/proc`` (Linux only)."""

from __future__ import annotations

import os
import resource

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size (``VmRSS``) of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def system_busy_seconds() -> float:
    """CPU time the machine's processes have used (all cores), from ``/proc/stat``.

    User, nice, system and steal (time the hypervisor gave to other guests); not interrupt
    and softirq time, which on loopback is mostly the benchmark's own network traffic and is
    not charged to any process (see :func:`irq_seconds`).
    """
    fields = _cpu_fields()
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return (user + nice + system + steal) / CLK_TCK


def irq_seconds() -> float:
    """Interrupt and softirq time of all cores (the kernel's network receive work)."""
    fields = _cpu_fields()
    return (fields[5] + fields[6]) / CLK_TCK


def _cpu_fields() -> list[int]:
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields + [0] * (8 - len(fields))


TCP_EXT_COUNTERS = (
    "ListenOverflows",  # a SYN or final ACK arrived with the accept queue full
    "ListenDrops",  # every connection request dropped at the listener (overflows included)
    "TCPReqQFullDrop",  # SYN dropped: the SYN (request) queue was full, no SYN cookies
    "TCPReqQFullDoCookies",  # SYN answered with a SYN cookie: request queue full
    "TCPSynRetrans",  # SYNs retransmitted by clients (each dropped SYN costs ~1 s)
    "TCPTimeouts",  # retransmission timeouts of any kind
)


def tcp_ext_counters() -> dict[str, int]:
    """The listen-queue counters of ``/proc/net/netstat`` (this network namespace).

    They are machine-wide: read them just before and after a measurement and take the
    difference; other traffic on the machine adds to them (rarely, on loopback).
    """
    try:
        with open("/proc/net/netstat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            out = {k: int(table[k]) for k in TCP_EXT_COUNTERS if k in table}
    return out
