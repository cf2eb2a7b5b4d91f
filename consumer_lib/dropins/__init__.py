"""Drop-ins for the SDKs services already use, so they take tokens from a `TokenClient` and
never fetch one themselves:

    successor        waiting for the token that replaces a rejected one
    wechatpy_client  TokenWeChatClient, a wechatpy WeChatClient (extra `wxtoken[wechatpy]`)
    requests_auth    WeChatTokenAuth, for requests
    httpx_auth       WeChatTokenHttpxAuth, for httpx
"""
