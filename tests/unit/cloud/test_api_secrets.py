"""The users' secrets (`cloud.api._secrets`) and grants (`cloud.api._authz`): pure functions."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.api import _secrets
from cloud.api._authz import BUILTIN_ROLES, grants
from cloud.store import BindingRow

KEY = _secrets.new_key()[1]


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=len(KEY) - 1), st.sampled_from(string.ascii_letters + string.digits + "_"))
def test_a_key_with_any_one_character_changed_is_refused(where: int, char: str) -> None:
    changed = KEY[:where] + char + KEY[where + 1:]
    assert (_secrets.parse_key(changed) is not None) == (changed == KEY)


def test_keys_are_recognisable_distinct_and_only_their_hash_is_kept() -> None:
    key_id, key, digest = _secrets.new_key()
    parsed = _secrets.parse_key(key)
    assert parsed is not None and parsed[0] == key_id and _secrets.key_hash(parsed[1]) == digest
    assert key.startswith("boxk_") and _secrets.looks_like_key(f"leaked: {key} in a log")
    assert len({_secrets.new_key()[1] for _ in range(100)}) == 100 and parsed[1] not in digest


def test_a_totp_code_names_its_step_within_one_step_of_skew_only() -> None:
    seed, now = _secrets.new_seed(), 1_800_000_015.0
    step = int(now) // 30
    for skew in (-1, 0, 1):
        assert _secrets.totp_step(seed, _secrets.totp_now(seed, now + 30 * skew), now) == step + skew
    assert _secrets.totp_step(seed, _secrets.totp_now(seed, now + 90), now) is None
    assert _secrets.totp_step(seed, "12345x", now) is None
    assert "secret=" in _secrets.otpauth_uri(seed, "ops@acme") and "issuer=boxcloud" in _secrets.otpauth_uri(seed, "x")


def test_passwords_and_recovery_codes() -> None:
    stored = _secrets.hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert _secrets.check_password(stored, "correct horse battery staple")
    assert not _secrets.check_password(stored, "Correct horse battery staple")
    assert not _secrets.check_password(None, "anything")  # no user: the same work, and a refusal
    assert not _secrets.check_password("not a hash", "anything")
    code = _secrets.new_recovery_codes(1)[0]
    assert _secrets.recovery_hash(code) == _secrets.recovery_hash(code.upper().replace("-", " ").replace(" ", ""))


def test_grants_are_default_deny_scoped_and_narrowed_by_a_key() -> None:
    def b(role: str, kind: str, scope: str = "", account: int = 1) -> BindingRow:
        return BindingRow(0, account, 7, role, kind, scope)

    assert grants(1, [], {}).names() == []
    g = grants(1, [b("admin", "box", "X"), b("viewer", "tag", "north"), b("owner", "account", account=2)], {})
    assert not g.can("user.manage") and not g.can("box.read")  # account permissions need an account binding
    assert g.scope("box.command.send").box_ids == {"X"} and g.scope("box.read").tags == {"north"}
    assert not g.scope("box.read").everything
    k = grants(1, [b("owner", "account")], {}, key_scopes=["box.data.read"])
    assert k.names() == ["box.data.read"]
    custom = grants(1, [b("ops", "account")], {"ops": ["box.command.send", "no.such"]})
    assert custom.names() == ["box.command.send"]
    assert BUILTIN_ROLES["viewer"] < BUILTIN_ROLES["operator"] < BUILTIN_ROLES["admin"] < BUILTIN_ROLES["owner"]
