"""WeChat's message crypto for the authorization-event URL: the official vectors, byte for
byte, and every way a push can fail to verify or decrypt."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from consumer_lib import ConfigError
from producer.platform.crypto import MessageCrypto, aes_key, msg_signature
from producer.platform.errors import CallbackRejected

# The open platform's message-push page (DESIGN.md): token AAAAA, key and IV all zero bytes.
OPEN_TOKEN = "AAAAA"
OPEN_KEY = "A" * 43
OPEN_APPID = "wx134c8103faa5a59e"
OPEN_TIMESTAMP = "1715943329"
OPEN_NONCE = "1590219412"
OPEN_SIGNATURE = "6c12a4205838198b8fa631b3220723bb07f1015c"
OPEN_ENCRYPT = (
    "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4Vtsd"
    "vE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5D"
    "kyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2lts"
    "oyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYE"
    "ZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpag"
    "SCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg=="
)
OPEN_RANDOM = b"1205899eaf019bbd"
OPEN_REPLY_XML = "<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>"
OPEN_REPLY_RANDOM = b"999951349e8ee746"
OPEN_REPLY_ENCRYPT = (
    "hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72g3GyvDdIZcr6+3H"
    "AZbSvPT9t/o11MI7d6WELwqrGd7jMnV0zv3Zc9Nq7"
)
OPEN_REPLY_SIGNATURE = "03e0812039325c2712ef5f0f980fd14c70d6e307"

# WeChat's Java sample, as kept in WxJava's WxCryptUtilTest.
PAM_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PAM_APPID = "wxb11529c136998cb6"
PAM_ENCRYPT = (
    "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
)


@pytest.fixture
def open_platform() -> MessageCrypto:
    return MessageCrypto(token=OPEN_TOKEN, encoding_aes_key=OPEN_KEY, appid=OPEN_APPID)


def seal(key: bytes, plain: bytes, *, block_bits: int = 256) -> str:
    """Encrypt `plain` (already laid out) as WeChat would, padding to `block_bits`."""
    padder = padding.PKCS7(block_bits).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def layout(xml: bytes, appid: bytes, *, length: int | None = None) -> bytes:
    size = len(xml) if length is None else length
    return b"r" * 16 + struct.pack(">I", size) + xml + appid


def rejected(reason: str, call: object, *args: object) -> None:
    with pytest.raises(CallbackRejected) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.reason == reason


def test_open_platform_vector_signature() -> None:
    """msg_signature of the open platform's example push is its published value."""
    signature = msg_signature(OPEN_TOKEN, OPEN_TIMESTAMP, OPEN_NONCE, OPEN_ENCRYPT)
    assert signature == OPEN_SIGNATURE


def test_open_platform_vector_decrypts(open_platform: MessageCrypto) -> None:
    """The example push decrypts to its 292-byte debug_demo XML, and re-encrypts byte for byte
    with its random prefix."""
    open_platform.verify(OPEN_SIGNATURE, OPEN_TIMESTAMP, OPEN_NONCE, OPEN_ENCRYPT)
    xml = open_platform.decrypt(OPEN_ENCRYPT)
    assert len(xml.encode()) == 292
    assert xml.startswith("<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>")
    assert "<Event><![CDATA[debug_demo]]></Event>" in xml
    assert open_platform.encrypt(xml, random_prefix=OPEN_RANDOM) == OPEN_ENCRYPT


def test_open_platform_reply_vector(open_platform: MessageCrypto) -> None:
    """The example reply: its Encrypt and MsgSignature byte for byte, in the reply envelope."""
    reply = open_platform.reply(
        OPEN_REPLY_XML, timestamp="1713424427", nonce="415670741", random_prefix=OPEN_REPLY_RANDOM
    )
    assert reply == (
        f"<xml><Encrypt><![CDATA[{OPEN_REPLY_ENCRYPT}]]></Encrypt>"
        f"<MsgSignature><![CDATA[{OPEN_REPLY_SIGNATURE}]]></MsgSignature>"
        "<TimeStamp>1713424427</TimeStamp><Nonce><![CDATA[415670741]]></Nonce></xml>"
    )
    assert open_platform.decrypt(OPEN_REPLY_ENCRYPT) == OPEN_REPLY_XML


def test_java_sample_vector() -> None:
    """WeChat's Java sample (WxJava's WxCryptUtilTest): the Chinese message and back."""
    crypto = MessageCrypto(token="pamtest", encoding_aes_key=PAM_KEY, appid=PAM_APPID)
    assert crypto.encrypt("我是中文abcd123", random_prefix=b"aaaabbbbccccdddd") == PAM_ENCRYPT
    assert crypto.decrypt(PAM_ENCRYPT) == "我是中文abcd123"


def test_random_prefix_differs_each_time(open_platform: MessageCrypto) -> None:
    """Without a fixed prefix two encryptions of one message differ and both decrypt."""
    first, second = open_platform.encrypt("<xml/>"), open_platform.encrypt("<xml/>")
    assert first != second
    assert open_platform.decrypt(first) == open_platform.decrypt(second) == "<xml/>"


@pytest.mark.parametrize(
    ("timestamp", "nonce", "encrypt", "signature"),
    [
        ("1715943330", OPEN_NONCE, OPEN_ENCRYPT, OPEN_SIGNATURE),  # another timestamp
        (OPEN_TIMESTAMP, "1590219413", OPEN_ENCRYPT, OPEN_SIGNATURE),  # another nonce
        (OPEN_TIMESTAMP, OPEN_NONCE, "x" + OPEN_ENCRYPT, OPEN_SIGNATURE),  # another Encrypt
        (OPEN_TIMESTAMP, OPEN_NONCE, OPEN_ENCRYPT, "0" * 40),
        (OPEN_TIMESTAMP, OPEN_NONCE, OPEN_ENCRYPT, ""),
        # The URL's `signature` (sha1 of token, timestamp, nonce) is not msg_signature.
        (OPEN_TIMESTAMP, OPEN_NONCE, OPEN_ENCRYPT, "cc0c594499c1634947d5b502f158ee518947db27"),
    ],
)
def test_bad_signature(
    open_platform: MessageCrypto, timestamp: str, nonce: str, encrypt: str, signature: str
) -> None:
    """Any changed value, or the URL's plain `signature`, fails verification."""
    rejected("bad_signature", open_platform.verify, signature, timestamp, nonce, encrypt)


def test_another_token_fails_verification() -> None:
    """A push signed with another platform's token does not verify."""
    other = MessageCrypto(token="BBBBB", encoding_aes_key=OPEN_KEY, appid=OPEN_APPID)
    rejected(
        "bad_signature", other.verify, OPEN_SIGNATURE, OPEN_TIMESTAMP, OPEN_NONCE, OPEN_ENCRYPT
    )


def test_tampered_ciphertext(open_platform: MessageCrypto) -> None:
    """A flipped bit in the ciphertext breaks the padding, the length or the appid: rejected."""
    raw = bytearray(base64.b64decode(OPEN_ENCRYPT))
    for position in (0, 100, len(raw) - 1):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        with pytest.raises(CallbackRejected) as info:
            open_platform.decrypt(base64.b64encode(bytes(tampered)).decode())
        assert info.value.reason in ("undecryptable", "wrong_appid")


def test_last_block_tampered_is_undecryptable(open_platform: MessageCrypto) -> None:
    """Changing the final ciphertext block garbles the padding: undecryptable."""
    raw = bytearray(base64.b64decode(OPEN_ENCRYPT))
    raw[-16:] = bytes(16)
    rejected("undecryptable", open_platform.decrypt, base64.b64encode(bytes(raw)).decode())


def test_wrong_padding(open_platform: MessageCrypto) -> None:
    """Padding to 16-byte blocks (AES's PKCS#7, not WeChat's 32) with a pad byte that does not
    repeat, and a pad byte over 32: undecryptable."""
    key = aes_key(OPEN_KEY)
    plain = layout(b"<xml/>", OPEN_APPID.encode())
    # Pad to a 32-byte boundary with a wrong last byte.
    fill = 32 - len(plain) % 32
    bad_fill = plain + bytes([fill]) * (fill - 1) + bytes([fill - 1 if fill > 1 else 2])
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    broken = base64.b64encode(encryptor.update(bad_fill) + encryptor.finalize()).decode()
    rejected("undecryptable", open_platform.decrypt, broken)
    over = plain + bytes([33]) * (64 - len(plain) % 32)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    broken = base64.b64encode(encryptor.update(over) + encryptor.finalize()).decode()
    rejected("undecryptable", open_platform.decrypt, broken)


def test_wrong_length_prefix(open_platform: MessageCrypto) -> None:
    """A length prefix pointing past the message is undecryptable; one too short leaves part
    of the XML in the appid trailer, so the appid check fails."""
    key = aes_key(OPEN_KEY)
    xml, appid = b"<xml><a>1</a></xml>", OPEN_APPID.encode()
    too_long = seal(key, layout(xml, appid, length=len(xml) + len(appid) + 1))
    rejected("undecryptable", open_platform.decrypt, too_long)
    too_short = seal(key, layout(xml, appid, length=len(xml) - 3))
    rejected("wrong_appid", open_platform.decrypt, too_short)


def test_shorter_than_prefix(open_platform: MessageCrypto) -> None:
    """A plaintext shorter than 16 random bytes and a length: undecryptable."""
    rejected("undecryptable", open_platform.decrypt, seal(aes_key(OPEN_KEY), b"short"))


def test_wrong_appid(open_platform: MessageCrypto) -> None:
    """A message sealed for another component appid, with our key, is refused."""
    other = MessageCrypto(token=OPEN_TOKEN, encoding_aes_key=OPEN_KEY, appid="wx0000000000000000")
    rejected("wrong_appid", open_platform.decrypt, other.encrypt("<xml/>"))


def test_another_key_cannot_decrypt(open_platform: MessageCrypto) -> None:
    """A push sealed with another EncodingAESKey does not decrypt with ours."""
    other = MessageCrypto(token=OPEN_TOKEN, encoding_aes_key=PAM_KEY, appid=OPEN_APPID)
    with pytest.raises(CallbackRejected) as info:
        open_platform.decrypt(other.encrypt("<xml><a>1</a></xml>"))
    assert info.value.reason in ("undecryptable", "wrong_appid")


@pytest.mark.parametrize("encrypt", ["not base64!", "QUJD=x", "QUJ", "Q" * 5 + "\n"])
def test_bad_base64(open_platform: MessageCrypto, encrypt: str) -> None:
    """An Encrypt value that is not strict base64 is malformed."""
    rejected("malformed", open_platform.decrypt, encrypt)


@pytest.mark.parametrize("encrypt", ["", "QUJD", base64.b64encode(b"x" * 33).decode()])
def test_ciphertext_length_not_whole_blocks(open_platform: MessageCrypto, encrypt: str) -> None:
    """A ciphertext that is empty or not whole AES blocks (a wrong length) is undecryptable."""
    rejected("undecryptable", open_platform.decrypt, encrypt)


@pytest.mark.parametrize("key", ["A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "-", ""])
def test_wrong_key_length_is_a_configuration_error(key: str) -> None:
    """An EncodingAESKey that is not 43 base64 characters is refused at start, naming its length
    and never its value."""
    with pytest.raises(ConfigError) as info:
        MessageCrypto(token="t", encoding_aes_key=key, appid=OPEN_APPID)
    assert f"this one has {len(key)}" in str(info.value)
    assert (key not in str(info.value)) or not key


def test_repr_hides_token_and_key(open_platform: MessageCrypto) -> None:
    """The crypto's repr names the platform only."""
    assert repr(open_platform) == f"MessageCrypto(appid={OPEN_APPID!r})"
