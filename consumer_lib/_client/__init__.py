"""`TokenClient` and its parts, private: the public names are re-exported by `consumer_lib`.

    client          TokenClient: the subscriber-side API (get_token, get_ticket, on_update)
    cache           TokenCache: the held tokens, highest version wins, expiry on every read
    feeding         UpdateFeed: pushed messages and Redis snapshot reads into the cache
    callbacks       CallbackThread: runs `on_update` callbacks off the feeding threads
    offset          ClockOffset: this host's clock against the producer's, from a header
    overdue         OverdueWatch: held tokens with no successor pushed in time
    stats           ClientStats, ClientCounters: what the client did, rejections by reason
    reporting       InvalidReporter, ReportOutcome: passive refresh (`report_invalid`)
    subscriber      Subscriber: the broker transport, one thread owning the pika connection
    http_transport  GatewayStream: the gateway transport, `GET /v1/stream` over HTTP(S)
    sse             SseParser: the Server-Sent Events lines that stream is made of

This file imports nothing, so a module here (`offset`, read by `consumer_lib.amqp`) costs
only itself.
"""
