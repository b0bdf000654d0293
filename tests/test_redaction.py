"""Secrets never reach log output, whatever path they take."""

import logging
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.redaction import SecretFilter, redact, register_secret


def test_registered_secret_is_masked_everywhere():
    register_secret("k3y-for-redaction-test")
    assert "k3y-for-redaction-test" not in redact("ws://h/socket.io/?EIO=4&apikey=k3y-for-redaction-test&x=1")
    assert "k3y-for-redaction-test" not in redact({"headers": {"apikey": "k3y-for-redaction-test"}})


def test_secret_fields_are_masked_even_when_unknown():
    text = redact('{"token":"B1F0C8E2-4D7A","hash":"ABCDEF-123","name":"acme"} ?apikey=zzz-unknown')
    assert "B1F0C8E2" not in text and "ABCDEF-123" not in text and "zzz-unknown" not in text
    assert "acme" in text


def test_log_filter_masks_arguments_and_exceptions(caplog):
    register_secret("another-s3cret-value")
    logger = logging.getLogger("test.redaction")
    logger.addFilter(SecretFilter())
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("connecting to %s", "ws://h/?apikey=another-s3cret-value")
        try:
            raise RuntimeError("bad key another-s3cret-value")
        except RuntimeError:
            logger.exception("failed")
    assert "another-s3cret-value" not in caplog.text
    assert "connecting to" in caplog.text


def test_thousands_of_tokens_are_all_masked_and_other_secrets_too():
    tokens = [f"{n:08X}-4D7A-4C1E-9D2F-6B7A8C9D{n:04d}" for n in range(5_000)]
    for token in tokens:
        register_secret(token)
    register_secret("Bearer hook s3cr3t")  # not token-shaped: a header value with spaces
    text = redact(f"a={tokens[17]} b=x{tokens[4999]}y c='Bearer hook s3cr3t' d=0000-not-a-token")
    assert tokens[17] not in text and tokens[4999] not in text and "s3cr3t" not in text
    assert "d=0000-not-a-token" in text


@pytest.mark.properties
@given(
    secret=st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=4, max_size=40),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_a_registered_secret_never_survives_redaction(secret: str, before: str, after: str) -> None:
    register_secret(secret)
    assert secret not in redact(before + secret + after)
