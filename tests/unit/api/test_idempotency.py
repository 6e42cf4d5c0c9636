"""The pure parts of ``Idempotency-Key`` handling: which keys are accepted, what a request's
fingerprint covers."""

import pytest

from astraforge.api.errors import ApiError
from astraforge.api.idempotency import check_key, fingerprint
from astraforge.api.models import ExecRequest


@pytest.mark.parametrize("key", ["a", "0f8e2c9a-5b1d-4c1e-9f00-3a2b1c0d9e8f", "x" * 255, "aGVsbG8=/+_.:~-"])
def test_keys_of_the_allowed_characters_and_length_pass(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "a b", "é", "a\n", 'a"', "a,b", "a;b"])
def test_other_keys_are_a_400_with_their_own_code(key: str) -> None:
    with pytest.raises(ApiError) as refused:
        check_key(key)
    assert refused.value.status_code == 400 and refused.value.code == "invalid_idempotency_key"


def test_no_key_is_no_key() -> None:
    assert check_key(None) is None


def test_the_fingerprint_is_the_parsed_request_not_its_spelling() -> None:
    spelled = ExecRequest.model_validate({"command": "id", "timeout_sec": 600})
    defaulted = ExecRequest.model_validate({"command": "id"})
    assert fingerprint({"body": spelled}) == fingerprint({"body": defaulted})
    assert fingerprint({"body": defaulted}) != fingerprint({"body": ExecRequest.model_validate({"command": "id "})})
    assert fingerprint({"body": defaulted, "wait": True}) != fingerprint({"body": defaulted, "wait": False})
