"""The platform's users' API: an HTTPS-only REST API (FastAPI) over the cloud's store.

Accounts are tenants; users (Basic, with TOTP 2FA) and service accounts (API keys only) act on
the Boxes their role bindings reach, nothing by default; every login failure, denial and write is
in the hash-chained audit trail. Modules: `_secrets` (hashes, keys, TOTP: pure), `_authz` (roles
and grants: pure), `_auth` (who is calling), `app` (the FastAPI app, problems, paging), `_boxes`
and `_people` (the routes), `server` (HTTPS on its own port). See docs/architecture.md, "The
users' API".
"""

from cloud.api.server import ApiServer

__all__ = ["ApiServer"]
