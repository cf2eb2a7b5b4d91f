"""Issue 21's row "the receiver under a flood of 1,000 forged pushes/s: 0 accepted,
legitimate pushes still stored", measured against a real uvicorn receiver on loopback.

The receiver runs in a child process (an in-memory registry; its counts read from
`/metrics`), the flood from this one: `--threads` keep-alive connections share `--rate`
forged pushes a second for `--seconds`, cycling through four forgeries (another token's
signature, a made-up signature, a stale timestamp, a replay of a legitimate push), while one
more thread sends `--legit-rate` legitimate pushes a second. Prints the forged pushes sent
and accepted (must be 0), the legitimate ones sent and stored, and the achieved rates.

    .venv/bin/python bench/receiver_flood.py [--seconds 5] [--rate 1000] [--threads 8]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from producer.platform.crypto import MessageCrypto
from producer.platform.receiver import EVENTS_PATH

APPID = "wxbench00000000001"
FORGED_TOKEN = "forgedtoken"
TOKEN = "benchtoken"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PATH = EVENTS_PATH.format(component_appid=APPID)


def serve(port_box: multiprocessing.Queue[int], stop: multiprocessing.synchronize.Event) -> None:
    from tests.integration.receiver_server import MemoryRegistry, ReceiverThread

    with ReceiverThread({APPID: (TOKEN, KEY)}, MemoryRegistry()) as server:
        port_box.put(server.port)
        stop.wait()


def ticket_xml(ticket: str) -> str:
    return (
        f"<xml><AppId>{APPID}</AppId><CreateTime>{int(time.time())}</CreateTime>"
        "<InfoType>component_verify_ticket</InfoType>"
        f"<ComponentVerifyTicket>{ticket}</ComponentVerifyTicket></xml>"
    )


@dataclass
class Tally:
    sent: int = 0
    accepted: int = 0
    errors: int = 0


def post(connection: http.client.HTTPConnection, query: dict[str, str], body: bytes) -> int:
    connection.request(
        "POST", f"{PATH}?{urlencode(query)}", body=body, headers={"Content-Type": "text/xml"}
    )
    response = connection.getresponse()
    response.read()
    return response.status


def paced(rate_per_s: float, until: float, send: Callable[[], None]) -> None:
    next_at = time.monotonic()
    while (now := time.monotonic()) < until:
        if now < next_at:
            time.sleep(min(next_at - now, until - now))
            continue
        send()
        next_at += 1.0 / rate_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="forged pushes a second")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--legit-rate", type=float, default=10.0)
    args = parser.parse_args()

    context = multiprocessing.get_context("fork")
    port_box: multiprocessing.Queue[int] = context.Queue()
    stop = context.Event()
    child = context.Process(target=serve, args=(port_box, stop), daemon=True)
    child.start()
    port = port_box.get(timeout=30)

    ours = MessageCrypto(token=TOKEN, encoding_aes_key=KEY, appid=APPID)
    forger = MessageCrypto(token=FORGED_TOKEN, encoding_aes_key=KEY, appid=APPID)
    legit, forged = Tally(), Tally()
    lock = threading.Lock()
    # A legitimate push, accepted first, that the flood then replays.
    stamp = str(int(time.time()))
    replay_sig, replay_body = ours.push(ticket_xml("replayed"), timestamp=stamp, nonce="r0")
    replay_query = {"timestamp": stamp, "nonce": "r0", "msg_signature": replay_sig}
    first = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert post(first, replay_query, replay_body) == 200
    legit.sent = legit.accepted = 1
    forged_body = forger.push(ticket_xml("forged"), timestamp=stamp, nonce="f")[1]

    def flood(index: int, until: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        count = 0

        def send() -> None:
            nonlocal count
            count += 1
            now = str(int(time.time()))
            kind = count % 4
            if kind == 0:  # another token: a well-formed push whose signature cannot match
                sig, body = forger.push(ticket_xml(f"f{index}-{count}"), timestamp=now, nonce="n")
                query = {"timestamp": now, "nonce": f"{index}-{count}", "msg_signature": sig}
            elif kind == 1:  # a made-up signature
                query = {"timestamp": now, "nonce": f"{index}-{count}", "msg_signature": "0" * 40}
                body = forged_body
            elif kind == 2:  # stale: signed by us an hour ago (a captured push)
                query, body = {**replay_query, "timestamp": str(int(stamp) - 3600)}, replay_body
            else:  # a replay of the accepted push
                query, body = replay_query, replay_body
            try:
                status = post(connection, query, body)
            except (OSError, http.client.HTTPException):
                with lock:
                    forged.errors += 1
                connection.close()
                return
            with lock:
                forged.sent += 1
                forged.accepted += status == 200

        paced(args.rate / args.threads, until, send)
        connection.close()

    def legitimate(until: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        count = 0

        def send() -> None:
            nonlocal count
            count += 1
            now = str(int(time.time()))
            sig, body = ours.push(ticket_xml(f"legit-{count}"), timestamp=now, nonce=f"L{count}")
            try:
                status = post(
                    connection, {"timestamp": now, "nonce": f"L{count}", "msg_signature": sig}, body
                )
            except (OSError, http.client.HTTPException):
                with lock:
                    legit.errors += 1
                connection.close()
                return
            with lock:
                legit.sent += 1
                legit.accepted += status == 200

        paced(args.legit_rate, until, send)
        connection.close()

    started = time.monotonic()
    until = started + args.seconds
    threads = [threading.Thread(target=flood, args=(i, until)) for i in range(args.threads)]
    threads.append(threading.Thread(target=legitimate, args=(until,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    metrics = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    stop.set()
    child.join(timeout=10)
    stored = int(float(re.search(r'callbacks_stored_total\{result="new"\} (\S+)', text)[1]))  # type: ignore[index]
    rejected = {
        m[1]: int(float(m[2]))
        for m in re.finditer(r'callbacks_rejected_total\{reason="(\w+)"\} (\S+)', text)
    }
    print(f"receiver flood over {elapsed:.1f} s ({args.threads} flood connections)")
    print(
        f"  forged:     {forged.sent} sent ({forged.sent / elapsed:.0f}/s achieved, "
        f"{args.rate:.0f}/s asked), {forged.accepted} accepted, {forged.errors} errors"
    )
    print(f"  refused by reason (receiver's counter): {rejected}")
    print(
        f"  legitimate: {legit.sent} sent, {legit.accepted} answered success, "
        f"{stored} stored (registry rows), {legit.errors} errors"
    )
    ok = forged.accepted == 0 and stored == legit.sent == legit.accepted
    print("  verdict:", "0 forged accepted, every legitimate push stored" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
