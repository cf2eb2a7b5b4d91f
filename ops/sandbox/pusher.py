"""The sandbox's pushes to each platform's authorization-event URL, as WeChat sends them:
encrypted and signed (`producer.platform.crypto`), query ``signature``, ``timestamp``,
``nonce``, ``encrypt_type=aes``, ``msg_signature``; success is the plain answer `success`.

`PlatformPusher` sends a new `component_verify_ticket` to every platform with a callback
URL at start and every ``push_interval_s`` (on its own thread), and the authorization events
the controls cause (from the control request's thread).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from producer.platform.crypto import MessageCrypto

from .config import SandboxConfig
from .state import SandboxState

logger = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 5.0
#: Pushes go straight to the callback URL, whatever *_proxy variables the environment holds.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def event_xml(component_appid: str, create_time: int, fields: Mapping[str, object]) -> str:
    """The decrypted message of a push: AppId, CreateTime, then `fields` (InfoType first)."""
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (
        f"<xml><AppId><![CDATA[{component_appid}]]></AppId>"
        f"<CreateTime>{create_time}</CreateTime>{body}</xml>"
    )


def deliver(url: str, crypto: MessageCrypto, token: str, xml: str, timestamp: int) -> bool:
    """POST one push to `url`; True when it answered `success`."""
    stamp, nonce = str(timestamp), str(secrets.randbelow(10**10))
    msg_signature, body = crypto.push(xml, timestamp=stamp, nonce=nonce)
    plain = "".join(sorted([token, stamp, nonce]))
    query = {
        "signature": hashlib.sha1(plain.encode(), usedforsecurity=False).hexdigest(),
        "timestamp": stamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": msg_signature,
    }
    separator = "&" if "?" in url else "?"
    request = urllib.request.Request(  # noqa: S310 (the configured callback URL, http(s) only)
        f"{url}{separator}{urlencode(query)}",
        data=body,
        method="POST",
        headers={"Content-Type": "text/xml"},
    )
    try:
        with _DIRECT.open(request, timeout=PUSH_TIMEOUT_S) as answer:
            return bool(answer.read(64) == b"success")
    except (urllib.error.URLError, OSError) as exc:
        logger.info("sandbox push to %s failed: %s", url, exc)
        return False


class PlatformPusher:
    """Pushes tickets on a timer (`start`/`stop`) and events on demand (`push_event`)."""

    def __init__(
        self, config: SandboxConfig, state: SandboxState, clock: Callable[[], float]
    ) -> None:
        self._state, self._clock = state, clock
        self._interval_s = config.push_interval_s
        self._targets = {
            p.component_appid: (
                p.callback_url,
                p.token,
                MessageCrypto(
                    token=p.token, encoding_aes_key=p.encoding_aes_key, appid=p.component_appid
                ),
            )
            for p in config.open_platforms
            if p.callback_url
        }
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._targets and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sandbox-pusher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=PUSH_TIMEOUT_S + 1)

    def wake(self) -> None:
        """Push tickets now (after `api_start_push_ticket`, or a test asking)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            for appid in self._targets:
                self.push_ticket(appid)
            self._wake.wait(self._interval_s)
            self._wake.clear()

    def push_ticket(self, appid: str) -> bool | None:
        """Push a new verify ticket now; None when pushes are stopped or no URL is set."""
        if appid not in self._targets:
            return None
        ticket = self._state.next_ticket(appid)
        if ticket is None:
            return None
        fields = {"InfoType": "component_verify_ticket", "ComponentVerifyTicket": ticket}
        return self.push_event(appid, fields)

    def push_event(self, appid: str, fields: Mapping[str, object]) -> bool | None:
        """Push one message for platform `appid`; None when it has no callback URL."""
        target = self._targets.get(appid)
        if target is None:
            return None
        url, token, crypto = target
        now = int(self._clock())
        delivered = deliver(url, crypto, token, event_xml(appid, now, fields), now)
        self._state.record_push(appid, str(fields.get("InfoType")), delivered)
        return delivered
