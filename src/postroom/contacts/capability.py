"""The contacts capability's manifest: contacts.*, contacts.import and `postroom contacts`."""

from postroom.contacts import api, cli, imports, openapi
from postroom.platform.capability import Capability

CAPABILITY = Capability("contacts", endpoints=[*api.ENDPOINTS, *imports.ENDPOINTS], operations=openapi.OPERATIONS,
                        schemas=openapi.SCHEMAS, commands=[cli.register])
