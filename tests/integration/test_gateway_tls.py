"""The gateway over HTTPS with client certificates required (mTLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.integration.servers import make_pki
from tests.waiting import wait_for

from .gateway_stack import start_gateway, wait_ready
from .stack import Stack


def test_mtls_requires_a_client_certificate_signed_by_the_ca(stack: Stack, tmp_path: Path) -> None:
    """With a client CA set, a client without a certificate cannot even connect; one with
    a certificate the CA signed (and an API key) reads tokens."""
    pki = make_pki(tmp_path / "pki")
    stack.producer()
    app_id = stack.app_ids[0]
    wait_for(lambda: stack.snapshot(app_id), timeout_s=30, message="a stored token")
    gw = start_gateway(
        stack,
        tmp_path,
        scheme="https",
        WXTOKEN_GATEWAY_TLS_CERT_FILE=str(pki.server_cert_file),
        WXTOKEN_GATEWAY_TLS_KEY_FILE=str(pki.server_key_file),
        WXTOKEN_GATEWAY_TLS_CLIENT_CA_FILE=str(pki.ca_file),
    )
    with_cert = ssl.create_default_context(cafile=str(pki.ca_file))
    with_cert.load_cert_chain(str(pki.client_cert_file), str(pki.client_key_file))
    wait_ready(gw, verify=with_cert)
    url = f"{gw.base_url}/v1/apps/{app_id}/access_token"
    answer = httpx.get(url, headers=gw.auth("reader"), verify=with_cert, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["access_token"]

    without_cert = ssl.create_default_context(cafile=str(pki.ca_file))
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, headers=gw.auth("reader"), verify=without_cert, timeout=10)
    # The certificate alone is not enough: the API key is still required.
    keyless = httpx.get(url, verify=with_cert, timeout=10)
    assert keyless.status_code == 401
