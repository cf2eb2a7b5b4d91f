"""The app id under which an authorizer's credentials travel: its platform, then itself.

A customer account (the authorizer) may authorize two third-party platforms; each platform
gets its own tokens for it, and neither may overwrite the other's. So the credential's app
id names both: ``{component_appid}.{authorizer_appid}`` (``wxcomp….wxcustomer…``), a valid
app id everywhere an app id goes (Redis keys, messages, the gateway's paths). A service that
knows only the authorizer appid asks by it where exactly one platform serves that account
(`TokenClient.get_token` and the gateway resolve it).
"""

from __future__ import annotations

import re

_APPID = re.compile(r"^[A-Za-z0-9_-]{1,31}$")


def authorizer_app_id(component_appid: str, authorizer_appid: str) -> str:
    """The credential app id of `authorizer_appid` served through `component_appid`."""
    for appid in (component_appid, authorizer_appid):
        if not _APPID.fullmatch(appid):
            raise ValueError(f"not an appid: {appid!r}")
    return f"{component_appid}.{authorizer_appid}"


def split_authorizer_app_id(app_id: str) -> tuple[str, str] | None:
    """(component appid, authorizer appid) of an authorizer credential's app id; None for
    any other app id."""
    component, dot, authorizer = app_id.partition(".")
    if not dot or not _APPID.fullmatch(component) or not _APPID.fullmatch(authorizer):
        return None
    return component, authorizer
