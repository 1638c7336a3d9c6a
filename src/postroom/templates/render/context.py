"""The template data every sender gives the render path (templates contract 5.1 and 5.2): the
caller's data, the contact, the list and broadcast in context, and the signed links to the
preference center, unsubscribe, one-click unsubscribe and confirmation, and the open-tracking URL. Pure: the
caller reads the contact, the workspace's endpoint and its secret.

The keys are written in the contract's order and a later key overwrites an earlier one of the
same name, so data a caller passes can never fake the system values (a `contact` or an
`unsubscribe_url` in transactional data is replaced).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from postroom.templates.render.tokens import Tracker

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def email_hmac(email: str, secret: str) -> str:
    """Lower-case hex HMAC-SHA256 of the normalised email, keyed with the workspace secret
    string's UTF-8 bytes: what the preference center and the unsubscribe links are checked by."""
    return hmac.new(secret.encode(), email.strip().lower().encode(), hashlib.sha256).hexdigest()


def _link(endpoint: str, path: str, params: Mapping[str, str]) -> str:
    """Form-encoded (space as `+`, `@` as `%40`), keys in byte order."""
    return f"{endpoint}/{path}?{urlencode(sorted(params.items()))}"


@dataclass(frozen=True)
class Links:
    """What the signed links of one recipient are built from."""

    endpoint: str          # the workspace's endpoint, without a trailing /
    workspace_id: str
    secret: str            # the workspace secret string
    email: str             # the contact's normalised email
    message_id: str

    def _signed(self, **params: str) -> dict[str, str]:
        return {"email": self.email, "email_hmac": email_hmac(self.email, self.secret), "wid": self.workspace_id,
                **params}

    def notification_center(self) -> str:
        return _link(self.endpoint, "notification-center", self._signed())

    def unsubscribe(self, list_id: str, list_name: str) -> str:
        return _link(self.endpoint, "notification-center",
                     self._signed(action="unsubscribe", lid=list_id, lname=list_name, mid=self.message_id))

    def confirm_subscription(self, list_id: str, list_name: str) -> str:
        return _link(self.endpoint, "notification-center",
                     self._signed(action="confirm", lid=list_id, lname=list_name, mid=self.message_id))

    def oneclick_unsubscribe(self, list_id: str) -> str:
        """Also the List-Unsubscribe URL of broadcast and automation mail."""
        return _link(self.endpoint, "unsubscribe-oneclick", self._signed(lids=list_id, mid=self.message_id))


@dataclass(frozen=True)
class Sending:
    """One recipient's context. `contact` is the contact as the contacts contract returns it
    (None when there is none); `list` and `broadcast` are `{"id", "name"}` when in context."""

    workspace_id: str
    endpoint: str
    website_url: str | None
    secret: str
    message_id: str
    now: int                                   # unix seconds at render (the tracker's sent_at)
    data: Mapping[str, Any] | None = None      # the caller's data (transactional `data`, test data)
    contact: Mapping[str, Any] | None = None
    list: Mapping[str, str] | None = None
    broadcast: Mapping[str, str] | None = None
    utm: Mapping[str, str] = field(default_factory=dict)
    global_feed: Any = None
    recipient_feed: Any = None
    tracker: Tracker | None = None             # tracking on: the message's signed URLs (tokens.signed_tracking)


def template_data(s: Sending) -> dict[str, Any]:
    """The data of 5.1, keys in its order (later keys overwrite earlier ones of the same name)."""
    out: dict[str, Any] = dict(s.data or {})
    contact = {k: v for k, v in (s.contact or {}).items() if k not in ("contact_lists", "contact_segments")}
    out["contact"] = contact
    email = contact.get("email")
    links = Links(s.endpoint, s.workspace_id, s.secret, email, s.message_id) if email else None
    if links:
        out["notification_center_url"] = links.notification_center()
    if s.broadcast is not None:
        out["broadcast"] = {"id": s.broadcast["id"], "name": s.broadcast["name"]}
        for key in UTM_KEYS:
            if s.utm.get(key):
                out[key] = s.utm[key]
    if s.list is not None and links:
        list_id, list_name = s.list["id"], s.list["name"]
        out["list"] = {"id": list_id, "name": list_name}
        out["unsubscribe_url"] = links.unsubscribe(list_id, list_name)
        out["oneclick_unsubscribe_url"] = links.oneclick_unsubscribe(list_id)
        out["confirm_subscription_url"] = links.confirm_subscription(list_id, list_name)
    if s.global_feed is not None:
        out["global_feed"] = s.global_feed
    out["workspace"] = {"base_url": s.endpoint, "website_url": (s.website_url or "").rstrip("/")}
    out["message_id"] = s.message_id
    # the pixel's URL when tracking is on, "" when it is off (engagement contract 1.5)
    out["tracking_opens_url"] = s.tracker.open_url() if s.tracker is not None else ""
    if s.recipient_feed is not None:
        out["recipient_feed"] = s.recipient_feed
    return out
