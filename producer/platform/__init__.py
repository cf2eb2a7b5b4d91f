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

db/, the registry (the `platform` extra; docs/platforms.md, "Registry"):

    registry.py     PlatformRegistry: callbacks, verify ticket, authorizers, stored apps
    records.py      what its reads return (StoredCallback, VerifyTicket, Authorizer)
    schema.py       the tables (one SQLAlchemy Core MetaData) and where each secret is sealed
    migrations/     Alembic revisions shipped in the package: migrate(), check()
    database.py     the URL, an engine that fails fast, exceptions -> RegistryUnavailable
    sealing.py      AES-256-GCM under the key file's keys, each value bound to its row
    rotation.py     re-seal everything under the first key (`python -m ...db.rotation`)
    startup.py      what wxtoken-producer runs at start with WXTOKEN_PLATFORM_DB_URL set
    _statements.py  insert-once and upsert, portable across both dialects
    _deadlines.py   a watchdog breaking sockets of transactions that outlive their deadline

The producer's side (with WXTOKEN_PLATFORMS_FILE; docs/platforms.md, "What the producer
keeps"):

    tokens.py     PlatformTokens: the component token from the ticket; authorizer tokens with
                  their refresh tokens (written before use); 61005/61006, 61023
    roster.py     Roster: the credentials to serve (component tokens, authorized authorizers)
    processor.py  CallbackProcessor: the leader acting on stored pushes
    reconcile.py  reconcile(): WeChat's list of authorizers against the registry
    keeper.py     PlatformKeeper: the roster, callbacks and hints threads
    wiring.py     PlatformSetup and the parts ProducerService makes from it
    metrics.py    PlatformCollector: wxtoken_platform_* (prometheus-client)
"""
