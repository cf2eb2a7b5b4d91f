"""Third-party platforms (WeChat's open platform, 第三方平台): the verify ticket pushed to the
callback receiver, the component token, and the authorizers' tokens, with the chain's durable
parts (ticket, refresh tokens, callback log) in a real database.

    events.py    PlatformEvent: what a verified, decrypted authorization-event push says
    errors.py    CallbackRejected (a push we refuse), RegistryUnavailable (the database)
    config.py    the platforms file (WXTOKEN_PLATFORMS_FILE): appid, token, EncodingAESKey, secret
    crypto.py    WeChat's message crypto: msg_signature, AES-256-CBC, the reply envelope
    messages.py  the push's XML read safely: the envelope, the decrypted event
    notice.py    the receiver's hint to the leader on Redis ({prefix}:platform:events)
    receiver/    wxtoken-platform-receiver: the authorization-event URL (Starlette)
"""
