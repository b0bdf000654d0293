"""Secrets never reach log output, whatever path they take."""

import logging

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
