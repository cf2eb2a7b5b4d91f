"""CPU of `report_invalid`'s bookkeeping under a report flood (issue 18 item 13).

`InvalidReporter` (inside every `TokenClient`, the gateway's too) remembers each token it
reported for 30 s. This reports `--reports` distinct tokens (30,000) spread over
`--seconds` (30) of a fake monotonic clock, with a `send` that only counts, and prints
the process CPU time they took and the marks still remembered. Issue 18 measured 34 s of
CPU for 30,000 reports in 30 s when every report rebuilt the whole dict. No services needed.

    .venv/bin/python bench/invalid_reporter.py [--reports 30000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumer_lib._client.reporting import InvalidReporter
from consumer_lib.wire.update import TokenKind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reports", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    steady = [0.0]
    reporter = InvalidReporter("wxbench.tokens", clock=time.time, monotonic=lambda: steady[0])
    sent = [0]

    def send(exchange: str, body: bytes, message_type: str) -> bool:
        sent[0] += 1
        return True

    def no_read(app_id: str, kind: TokenKind) -> None:
        raise AssertionError("send never fails here")

    gap_s = args.seconds / args.reports
    started = time.process_time()
    for n in range(args.reports):
        reporter.report(
            "wxbench000000001",
            f"TOKEN-{n:08d}-{'x' * 40}",
            TokenKind.ACCESS_TOKEN,
            held=None,
            reason=None,
            send=send,
            read_snapshot=no_read,
        )
        steady[0] += gap_s
    cpu_s = time.process_time() - started
    print(
        f"invalid reporter: {args.reports} distinct tokens reported over {args.seconds:.0f} s "
        f"(fake clock): {sent[0]} sent, {cpu_s:.2f} s of CPU "
        f"({cpu_s / args.reports * 1e6:.0f} µs a report), {len(reporter)} marks held at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
