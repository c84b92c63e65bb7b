"""Who may do what: permissions, the built-in roles, and a caller's grants. Pure (no I/O).

A permission is granted only by a role binding: default deny. A binding gives a user a role over
its whole account, over the Boxes with a tag, or over one Box. Box permissions (``box.*``,
``deployment.*``, ``release.read``) reach the Boxes of the binding's scope (a deployment is
within reach when every Box of it is; the releases, the platform's and no Box's, are listed to whoever
holds ``release.read`` over any scope); account permissions (users, roles, keys of others, audit)
come only from bindings over the whole account. An API key narrows its owner's grants to its scopes,
at every request: a key is never wider than its owner, even after the owner lost a role.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cloud.store import BindingRow, BoxScope

PERMISSIONS: dict[str, str] = {
    "box.read": "see a Box: status, tags, certificate, its alerts",
    "box.data.read": "read a Box's data: latest values, history",
    "box.config.read": "read a Box's configurations",
    "box.config.write": "push a configuration to a Box",
    "box.command.send": "send commands to a Box and read their results",
    "box.manage": "tag and untag a Box, revoke it",
    "box.alert.ack": "acknowledge a Box's alerts, with a note",
    "release.read": "list the software releases the platform can deploy (its TUF repository)",
    "deployment.read": "see the deployments whose every Box is in reach, and each Box's progress",
    "deployment.manage": "deploy a release to Boxes in reach, in waves; stop such a deployment",
    "user.read": "list the account's users, service accounts and their role bindings",
    "user.manage": "create and delete users and service accounts, their keys",
    "role.manage": "define custom roles, bind and unbind roles",
    "audit.read": "read the account's audit trail",
    "connector.read": "see the account's connectors (webhooks), their state and dead letters",
    "connector.manage": "create, confirm, rotate and delete connectors; replay their dead letters",
    "account.manage": "change the account's settings (2FA required of all)",
}
BOX_PERMISSIONS = frozenset(p for p in PERMISSIONS if p.startswith(("box.", "deployment.", "release.")))
ACCOUNT_PERMISSIONS = frozenset(PERMISSIONS) - BOX_PERMISSIONS
HELD_ANYWHERE = frozenset({"release.read"})  # Box permissions about no Box: held over any scope is enough

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": frozenset(PERMISSIONS) - {"account.manage"},
    "operator": frozenset(BOX_PERMISSIONS),
    "viewer": frozenset({"box.read", "box.data.read", "release.read", "deployment.read"}),
}
SCOPE_KINDS = ("account", "tag", "box")


@dataclass
class Grants:
    """What one caller may do: account permissions, and for each Box permission the Boxes it reaches."""

    account_id: int
    account: set[str] = field(default_factory=set)
    box_everything: set[str] = field(default_factory=set)
    box_tags: dict[str, set[str]] = field(default_factory=dict)
    box_ids: dict[str, set[str]] = field(default_factory=dict)

    def can(self, permission: str) -> bool:
        """An account permission (or a Box permission over the whole account)."""
        return permission in self.account or permission in self.box_everything

    def anywhere(self, permission: str) -> bool:
        """A Box permission held over some scope (the account, a tag or a Box)."""
        return permission in self.box_everything or bool(self.box_tags.get(permission) or self.box_ids.get(permission))

    def scope(self, permission: str) -> BoxScope:
        """The Boxes a Box permission reaches (as a condition the database applies)."""
        return BoxScope(self.account_id, permission in self.box_everything,
                        frozenset(self.box_tags.get(permission, ())), frozenset(self.box_ids.get(permission, ())))

    def names(self) -> list[str]:
        """Every permission held somewhere, sorted (for `GET /v1/me`)."""
        return sorted(self.account | self.box_everything | set(self.box_tags) | set(self.box_ids))


def role_permissions(role: str, custom: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """A role's permissions: built-in, custom (unknown names in it are ignored), or none."""
    if role in BUILTIN_ROLES:
        return BUILTIN_ROLES[role]
    return frozenset(p for p in custom.get(role, ()) if p in PERMISSIONS)


def grants(account_id: int, bindings: Iterable[BindingRow], custom: Mapping[str, Iterable[str]],
           key_scopes: Iterable[str] | None = None) -> Grants:
    """A caller's grants from its bindings, narrowed to an API key's scopes when it came with one."""
    g = Grants(account_id)
    allowed = None if key_scopes is None else frozenset(key_scopes)
    for b in bindings:
        if b.account_id != account_id:
            continue
        for p in role_permissions(b.role, custom):
            if allowed is not None and p not in allowed:
                continue
            if b.scope_kind == "account":
                (g.box_everything if p in BOX_PERMISSIONS else g.account).add(p)
            elif p in BOX_PERMISSIONS and b.scope_kind == "tag":
                g.box_tags.setdefault(p, set()).add(b.scope)
            elif p in BOX_PERMISSIONS and b.scope_kind == "box":
                g.box_ids.setdefault(p, set()).add(b.scope)
    return g


def unknown_permissions(names: Iterable[str]) -> list[str]:
    return sorted(set(names) - set(PERMISSIONS))
