"""Signed updates: the envelope, verification, key rotation, key files, and the codec the
settings build."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import stat
from pathlib import Path

import fakeredis
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from consumer_lib import ClientSettings, ConfigError, InvalidUpdate, TokenClient
from consumer_lib.settings import CommonSettings
from consumer_lib.testing import StubTransport
from consumer_lib.wire.signing import (
    PLAIN,
    UpdateCodec,
    codec_from_settings,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
)
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update

PRODUCER_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
SIGNER = UpdateCodec(signer=PRODUCER_KEY)
VERIFIER = UpdateCodec(verify_keys=[PRODUCER_KEY.public_key()])


def envelope(
    update_bytes: bytes, *, key: Ed25519PrivateKey = PRODUCER_KEY, **changes: str
) -> bytes:
    fields = {
        "payload": update_bytes.decode(),
        "key_id": key_id(key.public_key()),
        "sig": base64.b64encode(key.sign(update_bytes)).decode(),
        **changes,
    }
    return json.dumps(fields).encode()


def test_signed_update_round_trips_through_a_verifier() -> None:
    """What the producer signs, a subscriber holding only the public key accepts."""
    update = make_update()
    raw = SIGNER.encode(update)
    assert VERIFIER.decode(raw) == update
    assert json.loads(raw)["key_id"] == key_id(PRODUCER_KEY.public_key())


def test_unsigned_update_is_refused_unless_insecure() -> None:
    """A plain update is rejected by a verifier and accepted only in insecure mode."""
    raw = make_update().encode()
    with pytest.raises(InvalidUpdate, match="unsigned"):
        VERIFIER.decode(raw)
    assert UpdateCodec(accept_unsigned=True).decode(raw) == make_update()


def test_tampered_payload_fails_verification() -> None:
    """Changing one byte of the signed payload (a token swapped in) breaks the signature."""
    good = make_update().encode()
    forged = good.replace(b"TOKEN-aaaa", b"TOKEN-bbbb")
    raw = envelope(forged, sig=base64.b64encode(PRODUCER_KEY.sign(good)).decode())
    with pytest.raises(InvalidUpdate, match="bad signature"):
        VERIFIER.decode(raw)


def test_update_signed_by_an_unknown_key_is_refused() -> None:
    """A well-formed update signed with someone else's key is rejected, naming the key id."""
    raw = envelope(make_update().encode(), key=OTHER_KEY)
    with pytest.raises(InvalidUpdate, match=f"unknown key {key_id(OTHER_KEY.public_key())}"):
        VERIFIER.decode(raw)


def test_claiming_a_known_key_id_does_not_help_a_forger() -> None:
    """A signature by another key under the producer's key id fails verification."""
    raw = envelope(make_update().encode(), key=OTHER_KEY, key_id=key_id(PRODUCER_KEY.public_key()))
    with pytest.raises(InvalidUpdate, match="bad signature"):
        VERIFIER.decode(raw)


def test_two_verify_keys_allow_rotation() -> None:
    """During a rotation updates signed with the old or the new key are both accepted."""
    both = UpdateCodec(verify_keys=[PRODUCER_KEY.public_key(), OTHER_KEY.public_key()])
    assert both.decode(SIGNER.encode(make_update())) == make_update()
    assert both.decode(UpdateCodec(signer=OTHER_KEY).encode(make_update())) == make_update()


@pytest.mark.parametrize(
    "changes",
    [
        {"sig": "not base64!"},
        {"sig": base64.b64encode(b"short").decode()},
        {"key_id": "XYZ"},
        {"key_id": "0123456789ABCDEF"},
        {"extra": "field"},
    ],
)
def test_malformed_envelopes_are_invalid(changes: dict[str, str]) -> None:
    """Every malformed envelope raises InvalidUpdate with a one-line reason."""
    with pytest.raises(InvalidUpdate) as caught:
        VERIFIER.decode(envelope(make_update().encode(), **changes))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"payload": 1, "key_id": "0123456789abcdef", "sig": "AA=="}',
        b'{"payload": "x", "sig": "AA=="}',
        b"[1, 2]",
        b"\xff\xfe",
        b"",
    ],
)
def test_garbage_is_invalid_update(raw: bytes) -> None:
    """Non-objects, half envelopes and bytes that are not UTF-8 are all InvalidUpdate."""
    with pytest.raises(InvalidUpdate):
        VERIFIER.decode(raw)


@given(st.binary(max_size=512))
def test_decoder_raises_only_invalid_update(raw: bytes) -> None:
    """Whatever bytes arrive, the verifying decoder raises nothing but InvalidUpdate."""
    with contextlib.suppress(InvalidUpdate):
        VERIFIER.decode(raw)


def test_generate_keypair_writes_safe_modes_and_never_overwrites(tmp_path: Path) -> None:
    """The private key is 0600, the public 0644, and an existing key is never replaced."""
    private_path, public_path = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    before = private_path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "k")
    assert private_path.read_bytes() == before
    signer = UpdateCodec(signer=load_private_key(private_path))
    verifier = UpdateCodec(verify_keys=load_public_keys([public_path]))
    assert verifier.decode(signer.encode(make_update())) == make_update()


def test_key_file_problems_are_one_line_config_errors(tmp_path: Path) -> None:
    """A missing file, a non-PEM file and a non-Ed25519 key each name the setting."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path, expected in [
        (tmp_path / "missing.pem", "cannot read"),
        (garbage, "not an unencrypted PEM private key"),
        (rsa_key, "not an Ed25519 key"),
    ]:
        with pytest.raises(ConfigError, match=expected) as caught:
            load_private_key(path)
        assert str(caught.value).startswith("WXTOKEN_SIGNING_KEY_FILE: ")
    with pytest.raises(ConfigError, match=r"WXTOKEN_VERIFY_KEYS: .* not a PEM public key"):
        load_public_keys([garbage])


def test_settings_without_keys_refuse_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No verify keys, or a signer without a signing key, stop the program unless insecure
    mode is set, which is logged."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="WXTOKEN_VERIFY_KEYS is not set"):
        codec_from_settings(CommonSettings())
    _, public_path = generate_keypair(tmp_path / "k")
    with pytest.raises(ConfigError, match="WXTOKEN_SIGNING_KEY_FILE is not set"):
        codec_from_settings(CommonSettings(verify_keys=str(public_path)), must_sign=True)
    with caplog.at_level(logging.WARNING):
        codec = codec_from_settings(CommonSettings(insecure_accept_unsigned=True), must_sign=True)
    assert codec.accept_unsigned
    assert "INSECURE" in caplog.text
    with pytest.raises(ConfigError, match="WXTOKEN_VERIFY_KEYS is not set"):
        TokenClient(ClientSettings(), redis_client=fakeredis.FakeRedis())


def test_store_compares_versions_inside_signed_envelopes() -> None:
    """The Lua compare-and-set reads the version inside an envelope: older is refused."""
    store = TokenStore(fakeredis.FakeRedis(), codec=SIGNER)
    assert store.write(make_update(version=5)).written
    result = store.write(make_update(version=4, value="TOKEN-older-one-0004"))
    assert not result.written
    assert result.stored == make_update(version=5)
    assert store.read("wxapp1") == make_update(version=5)


def test_client_drops_forged_messages_and_keeps_its_token(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A subscriber drops unsigned and forged updates, counts and logs them without the
    token, and keeps serving the genuine one."""
    clock.now_s = T0 + 1
    _, public_path = generate_keypair(tmp_path / "k")
    client = TokenClient(
        ClientSettings(verify_keys=str(public_path), amqp_url="amqp://guest:guest@127.0.0.1:1/%2F"),
        redis_client=fakeredis.FakeRedis(),
        clock=clock,
        transport=(stub := StubTransport()),
    )
    try:
        genuine = make_update(version=3)
        signer = UpdateCodec(signer=load_private_key(tmp_path / "k"))
        stub.push_raw(signer.encode(genuine))
        forged = make_update(version=9, value="TOKEN-from-the-attacker-9999")
        stub.push_raw(forged.encode())
        stub.push_raw(UpdateCodec(signer=OTHER_KEY).encode(forged))
        assert client.get_token("wxapp1", timeout=0) == genuine.value
        assert client.stats.rejected == 2
        assert forged.value not in caplog.text
    finally:
        client.close()


def test_plain_codec_is_the_unsigned_default() -> None:
    """Without keys the codec writes plain JSON, as before signing existed."""
    assert PLAIN.encode(make_update()) == make_update().encode()
    assert not PLAIN.signs


def test_insecure_flag_is_ignored_when_keys_are_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With verify keys (or a signing key) configured, WXTOKEN_INSECURE_ACCEPT_UNSIGNED=1 is
    ignored with a warning: an unsigned update is refused."""
    private_path, public_path = generate_keypair(tmp_path / "k")
    unsigned = PLAIN.encode(make_update())
    for settings in (
        CommonSettings(verify_keys=str(public_path), insecure_accept_unsigned=True),
        CommonSettings(signing_key_file=private_path, insecure_accept_unsigned=True),
    ):
        with caplog.at_level(logging.WARNING):
            codec = codec_from_settings(settings)
        assert not codec.accept_unsigned
        with pytest.raises(InvalidUpdate, match="unsigned"):
            codec.decode(unsigned)
    assert "INSECURE_ACCEPT_UNSIGNED is ignored" in caplog.text


def test_a_verify_keys_directory_means_every_pub_file_in_it(tmp_path: Path) -> None:
    """WXTOKEN_VERIFY_KEYS naming a directory trusts each *.pub in it (compose's deploy/keys)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "README.md").write_text("public keys only\n", encoding="utf-8")
    _, alice = generate_keypair(keys / "ops-alice.key")
    _, bob = generate_keypair(keys / "ops-bob.key")
    (keys / "ops-alice.key").unlink()  # private keys never live there
    (keys / "ops-bob.key").unlink()
    settings = CommonSettings(verify_keys=str(keys))
    assert settings.verify_key_files() == [alice, bob]
    assert len(load_public_keys(settings.verify_key_files())) == 2
