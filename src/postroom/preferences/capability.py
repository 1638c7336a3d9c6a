"""The preferences capability's manifest: one-click unsubscribe, /preferences, the owner's
/subscribe and the notification-center page, all public and authenticated by email_hmac."""

from postroom.platform.capability import Capability
from postroom.preferences import api, openapi

CAPABILITY = Capability("preferences", routes=api.ROUTES, paths=openapi.PATHS, schemas=openapi.SCHEMAS)
