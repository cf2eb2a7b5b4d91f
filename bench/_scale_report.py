"""The table `bench/scale.py` prints: one `Row` per fleet size, against the goals."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from _scale_measure import Usage

LEASE_TTL_S = 5


@dataclass
class Row:
    apps: int
    #: Every app with both tickets (jsapi, wx_card): three credentials an app.
    tickets: bool = False
    fill_s: float | None = None
    #: The leader's CPU seconds (user + sys) when the fill ended, start-up included.
    fill_cpu_s: float | None = None
    #: The 1-minute load average when the fill ended.
    fill_load: float | None = None
    #: The leader's Redis round trips by the end of the fill, start-up included.
    fill_round_trips: int | None = None
    filled: int = 0
    leader: Usage | None = None
    standby: Usage | None = None
    subscriber: Usage | None = None
    max_threads: int = 0
    takeover_s: float | None = None
    takeover_from_kill_s: float | None = None
    takeover_seen: int = 0
    takeover_calls: int | None = None
    stop_s: float | None = None
    raw_publish_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def credentials(self) -> int:
        return self.apps * (3 if self.tickets else 1)

    @property
    def fill_cpu_ms_each(self) -> float | None:
        """The leader's CPU ms a credential on the fill (start-up included)."""
        if self.fill_cpu_s is None or not self.filled:
            return None
        return 1000 * self.fill_cpu_s / self.filled

    @property
    def label(self) -> str:
        if self.tickets:
            return f"{self.apps:,} apps + 2 tickets ({self.credentials:,})"
        return f"{self.apps:,} apps"


def show(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def print_table(rows: list[Row]) -> None:
    print()
    print(f"os.cpu_count() = {os.cpu_count()}; load average now {os.getloadavg()[0]:.2f}")
    header = ["measure", *[r.label for r in rows], "goal (10,000)"]
    lines = [
        [
            "all credentials in Redis from empty, s",
            *[show(r.fill_s) if r.fill_s else f"{r.filled:,} only" for r in rows],
            "<= 60",
        ],
        [
            "  leader CPU by then, s (ms a credential)",
            *[f"{show(r.fill_cpu_s)} ({show(r.fill_cpu_ms_each, '{:.2f}')})" for r in rows],
            "",
        ],
        ["  load average (1 min) at the end", *[show(r.fill_load, "{:.2f}") for r in rows], ""],
        [
            "  leader's Redis round trips a credential",
            *[
                show(r.fill_round_trips and r.filled and r.fill_round_trips / r.filled, "{:.2f}")
                for r in rows
            ],
            "",
        ],
        ["producer threads (most seen)", *[str(r.max_threads) for r in rows], "<= 32"],
        ["leader CPU, % of one core", *[show(r.leader and r.leader.cpu_pct) for r in rows], "<= 5"],
        [
            "leader RSS, MiB",
            *[show(r.leader and r.leader.rss_mib, "{:.0f}") for r in rows],
            "<= 250",
        ],
        [
            "standby CPU, % of one core",
            *[show(r.standby and r.standby.cpu_pct) for r in rows],
            "<= 2",
        ],
        ["standby RSS, MiB", *[show(r.standby and r.standby.rss_mib, "{:.0f}") for r in rows], ""],
        ["takeover after the lease, s", *[show(r.takeover_s, "{:.2f}") for r in rows], "<= 5"],
        [
            "  ... from the SIGKILL, s",
            *[show(r.takeover_from_kill_s, "{:.2f}") for r in rows],
            f"<= {LEASE_TTL_S} + 5",
        ],
        [
            "  credentials re-published / held",
            *[f"{r.takeover_seen:,}/{r.filled:,}" for r in rows],
            "all",
        ],
        ["  upstream calls during takeover", *[str(r.takeover_calls) for r in rows], "0"],
        [
            "  baseline: raw confirmed publish, s",
            *[show(r.raw_publish_s, "{:.2f}") for r in rows],
            "",
        ],
        [
            "  takeover / baseline",
            *[
                show(
                    r.takeover_s / r.raw_publish_s if r.takeover_s and r.raw_publish_s else None,
                    "{:.1f}x",
                )
                for r in rows
            ],
            "",
        ],
        [
            "subscriber CPU, % of one core",
            *[show(r.subscriber and r.subscriber.cpu_pct) for r in rows],
            "<= 3",
        ],
        [
            "subscriber RSS, MiB",
            *[show(r.subscriber and r.subscriber.rss_mib, "{:.0f}") for r in rows],
            "<= 150",
        ],
        ["clean stop on SIGTERM, s", *[show(r.stop_s, "{:.2f}") for r in rows], "<= 2"],
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    base = rows[0]
    for row in rows[1:]:
        if base.leader and row.leader:
            print(
                f"growth {base.label} -> {row.label}: leader CPU x"
                f"{row.leader.cpu_pct / max(base.leader.cpu_pct, 0.01):.1f}, RSS x"
                f"{row.leader.rss_mib / base.leader.rss_mib:.1f}"
            )
    for row in rows:
        for note in row.notes:
            print(f"note ({row.label}): {note}")
