"""Webhook signatures: the Standard Webhooks specification's published vector, rotation, the item hmac,
and the verifier of docs/integrations.md run as written."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from cloud.hooks import items, signing

# the specification's own test vector (standard-webhooks, libraries' tests)
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TS, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
DOCS = Path(__file__).resolve().parents[3] / "docs" / "integrations.md"


def test_the_signature_is_the_specifications_vector() -> None:
    assert signing.signature([SPEC_SECRET], SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    new = signing.new_secret()
    header = signing.signature([new, SPEC_SECRET], SPEC_ID, SPEC_TS, SPEC_BODY)
    assert header.split()[1] == SPEC_SIG
    for secret in (new, SPEC_SECRET):
        assert signing.verify(secret, SPEC_ID, str(SPEC_TS), SPEC_BODY, header, now=SPEC_TS)
    assert not signing.verify(signing.new_secret(), SPEC_ID, str(SPEC_TS), SPEC_BODY, header, now=SPEC_TS)


def test_an_altered_body_id_or_an_old_timestamp_does_not_verify() -> None:
    assert not signing.verify(SPEC_SECRET, SPEC_ID, str(SPEC_TS), SPEC_BODY + b" ", SPEC_SIG, now=SPEC_TS)
    assert not signing.verify(SPEC_SECRET, "msg_other", str(SPEC_TS), SPEC_BODY, SPEC_SIG, now=SPEC_TS)
    assert not signing.verify(SPEC_SECRET, SPEC_ID, str(SPEC_TS), SPEC_BODY, SPEC_SIG, now=SPEC_TS + 301)


def test_each_item_carries_the_hex_hmac_of_its_data_text() -> None:
    stored = '{"id":"BOX-1/7/1","box":"BOX-1","data":"{\\"box\\":\\"BOX-1\\"}"}'
    body = items.body(3, [stored], SPEC_SECRET)
    assert body == (b'{"type":"data","connector":3,"items":[{"id":"BOX-1/7/1","box":"BOX-1","data":"{\\"box\\":'
                    b'\\"BOX-1\\"}","hmac":"342406681fc03dbfc9d66e02d8bc4cbe8418cc0d5f879038bdbb16513582f63e"}]}')
    assert signing.item_hmac(SPEC_SECRET, '{"box":"BOX-1"}') == hmac.new(
        signing.key(SPEC_SECRET), b'{"box":"BOX-1"}', hashlib.sha256).hexdigest()


def test_a_delivery_id_is_the_same_for_the_same_items_and_differs_for_others() -> None:
    a = ['{"id":"B/1/1","box":"B","data":"{}"}', '{"id":"B/1/2","box":"B","data":"{}"}']
    assert items.message_id(1, a) == items.message_id(1, list(a))
    assert items.message_id(1, a) != items.message_id(1, a[:1]) != items.message_id(2, a[:1])


def test_the_verifier_in_the_docs_accepts_the_vectors_in_the_docs() -> None:
    text = DOCS.read_text()
    code = re.search(r"```python\n(# verify.py.*?)```", text, re.S)
    assert code, "docs/integrations.md has no verifier"
    assert len(code[1].strip().splitlines()) <= 12
    scope: dict[str, object] = {}
    exec(code[1], scope)
    verify = scope["verify"]
    assert callable(verify)
    assert verify(SPEC_SECRET, {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS),
                                "webhook-signature": SPEC_SIG}, SPEC_BODY, now=SPEC_TS)
    assert not verify(SPEC_SECRET, {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS),
                                    "webhook-signature": SPEC_SIG}, SPEC_BODY + b"x", now=SPEC_TS)
    assert SPEC_SIG in text and "342406681fc03dbfc9d66e02d8bc4cbe8418cc0d5f879038bdbb16513582f63e" in text
