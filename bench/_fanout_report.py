"""The fan-out bench's read-outs: percentiles, the processes' CPU, one signature check, and
where the time goes (see fanout.py)."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib.wire.signing import signature_ok, verifier


def cpu_s(pids: list[int]) -> float:
    """CPU seconds the live threads of the processes `pids` have run so far, from the
    scheduler's nanosecond counts (/proc/PID/task/TID/schedstat): clock ticks are too coarse
    for a few milliseconds of idle CPU a process."""
    total_ns = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total_ns += int((task / "schedstat").read_text().split()[0])
    return total_ns / 1e9


def signature_check_us() -> tuple[float, float]:
    """One Ed25519 check of an update-sized payload, in µs: libsodium (what consumer_lib
    uses) and OpenSSL (through cryptography), in this process."""
    key = Ed25519PrivateKey.generate()
    payload = b"x" * 350
    signature = key.sign(payload)
    checker = verifier(key.public_key())
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        signature_ok(checker, signature, payload)
    sodium_us = (time.perf_counter() - started) / rounds * 1e6
    public_key = key.public_key()
    started = time.perf_counter()
    for _ in range(rounds):
        public_key.verify(signature, payload)
    return sodium_us, (time.perf_counter() - started) / rounds * 1e6


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def print_where_the_time_goes(
    answered: dict[str, float],
    raw_started: dict[str, float],
    published: dict[str, float],
    received: dict[tuple[str, str], dict[int, float]],
    cpu_used: dict[str, float],
    window: tuple[float, float],
    subscribers: int,
) -> None:
    """Medians of each leg, the subscribers' CPU a message, and one signature check."""
    print("where the time goes (p50, ms after the upstream answer / the raw publish):")
    sides = (("wxtoken", "wx", answered), ("raw pika", "raw", raw_started))
    for name, side, started in sides:
        legs: dict[str, list[float]] = defaultdict(list)
        for key, at in started.items():
            got = received.get((side, key), {})
            if not window[0] <= at <= window[1] or len(got) < subscribers:
                continue
            if side == "wx" and key in published:  # the header has ms resolution
                legs["published"].append((published[key] - at) * 1000)
            legs["first holder"].append((min(got.values()) - at) * 1000)
            legs["last holder"].append((max(got.values()) - at) * 1000)
        print(
            f"  {name:9s}"
            + "".join(f"  {leg} {statistics.median(v):5.1f}" for leg, v in legs.items() if v)
        )
    for name, side, started in sides:
        messages = subscribers * sum(1 for at in started.values() if window[0] <= at <= window[1])
        if messages and side in cpu_used:
            print(
                f"  {name:9s} subscriber CPU a message: {cpu_used[side] / messages * 1e6:4.0f} µs "
                "(from /proc, less what they spend idle)"
            )
    sodium_us, openssl_us = signature_check_us()
    print(
        f"  one Ed25519 check in this process: libsodium {sodium_us:.0f} µs (consumer_lib's), "
        f"OpenSSL {openssl_us:.0f} µs"
    )
