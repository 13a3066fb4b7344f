"""SMTP channel against a real aiosmtpd server with STARTTLS required and AUTH."""

from __future__ import annotations

import asyncio

import pytest

from connectors.delivery import DeliveryConfigError, RetryPolicy
from connectors.smtp import SmtpChannel, SmtpConfig, render_email
from tests.connectors.smtp_server import PASSWORD, USER

pytestmark = pytest.mark.integration

ENV = {"TEST_SMTP_USER": USER, "TEST_SMTP_PASSWORD": PASSWORD}


def message(n: int = 1, **extra) -> dict:
    m = {"schema": 1, "message_id": f"{n:032x}", "campaign_id": "email-espresso-resend", "channel": "email",
         "contact_id": f"c-{n}", "to": {"email": f"person{n}@example.com", "name": "Ana Lima"},
         "subject": "Ana, your cart misses you", "body": "Free shipping until Sunday.", "data": {}}
    m.update(extra)
    return m


def channel(server, env=ENV, **kw) -> SmtpChannel:
    config = SmtpConfig(host="127.0.0.1", port=server.port, from_addr="shop@espresso.test", from_name="The Shop",
                        starttls=True, username_env="TEST_SMTP_USER", password_env="TEST_SMTP_PASSWORD",
                        ca_file=str(server.ca_file), timeout_s=10, retry=RetryPolicy(3, 0.01, 0.05), **kw)
    return SmtpChannel(config, environ=env)


def send(ch: SmtpChannel, *messages: dict):
    async def run():
        try:
            return await asyncio.gather(*(ch.send(m) for m in messages))
        finally:
            await ch.close()
    return asyncio.run(run())


def test_email_delivered_over_starttls_with_auth(smtp_server):
    """The rendered email arrives over TLS after AUTH, with subject, sender, recipient, text and
    HTML parts, a Message-ID derived from message_id, and List-Unsubscribe."""
    m = message(1, html="<p>Free <b>shipping</b></p>", data={"unsubscribe_url": "https://shop.test/u/1"})
    [result] = send(channel(smtp_server), m)
    assert result.ok, result
    [mail] = smtp_server.messages
    mail_from, rcpts, over_tls, authenticated = smtp_server.envelopes[0]
    assert (mail_from, rcpts, over_tls, authenticated) == ("shop@espresso.test", ["person1@example.com"], True, True)
    assert mail["Subject"] == "Ana, your cart misses you"
    assert mail["To"] == "Ana Lima <person1@example.com>"
    assert mail["From"] == "The Shop <shop@espresso.test>"
    assert mail["Message-ID"] == f"<{m['message_id']}@espresso.test>"
    assert mail["List-Unsubscribe"] == "<https://shop.test/u/1>"
    assert mail.get_body(("plain",)).get_content().strip() == "Free shipping until Sunday."
    assert "<b>shipping</b>" in mail.get_body(("html",)).get_content()


def test_many_emails_reuse_pooled_connections(smtp_server):
    """20 concurrent sends through a pool of 3 connections all arrive, each once."""
    msgs = [message(i) for i in range(20)]
    results = send(channel(smtp_server, max_connections=3), *msgs)
    assert all(r.ok for r in results)
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp_server.messages) == \
        sorted(m["to"]["email"] for m in msgs)


def test_permanent_5xx_is_not_retried(smtp_server):
    """A recipient refused with 550 fails at once with reason `smtp_550`."""
    smtp_server.reject_rcpt["person2@example.com"] = "550 5.1.1 no such user"
    [result] = send(channel(smtp_server), message(2))
    assert (result.ok, result.reason, result.attempts) == (False, "smtp_550", 1)
    assert smtp_server.messages == []


def test_transient_4xx_is_retried_until_attempts_run_out(smtp_server):
    """A 451 is retried up to max_attempts, then fails with `smtp_451`."""
    smtp_server.reject_rcpt["person3@example.com"] = "451 4.3.0 try later"
    [result] = send(channel(smtp_server), message(3))
    assert (result.ok, result.reason, result.attempts) == (False, "smtp_451", 3)


def test_wrong_password_is_a_failed_delivery(smtp_server):
    """Refused credentials give reason `smtp_auth` (not retried), not an exception."""
    [result] = send(channel(smtp_server, env={"TEST_SMTP_USER": USER, "TEST_SMTP_PASSWORD": "wrong"}), message(4))
    assert (result.ok, result.reason, result.attempts) == (False, "smtp_auth", 1)


def test_untrusted_certificate_is_refused(smtp_server):
    """Without the test CA the server certificate is not trusted: a `connection_error`."""
    ch = SmtpChannel(SmtpConfig(host="127.0.0.1", port=smtp_server.port, from_addr="shop@espresso.test",
                                username_env="U", password_env="P", retry=RetryPolicy(1)),
                     environ={"U": USER, "P": PASSWORD})
    [result] = send(ch, message(5))
    assert not result.ok and result.reason == "connection_error"
    assert smtp_server.messages == []


def test_message_without_address_is_bad_message(smtp_server):
    """A record with no to.email fails as `bad_message` without contacting the server."""
    [result] = send(channel(smtp_server), message(6, to={}))
    assert (result.ok, result.reason, result.attempts) == (False, "bad_message", 0)


def test_header_injection_is_flattened():
    """Line breaks in a subject cannot add headers."""
    mail = render_email(message(7, subject="Hi\r\nBcc: evil@example.com"), "shop@espresso.test")
    assert mail["Bcc"] is None and mail["Subject"] == "Hi Bcc: evil@example.com"


def test_config_errors():
    """Credentials env vars go in pairs, TLS modes are exclusive, unset secrets raise at start-up."""
    with pytest.raises(DeliveryConfigError, match="go together"):
        SmtpConfig(host="h", from_addr="a@b", username_env="U")
    with pytest.raises(DeliveryConfigError, match="exclusive"):
        SmtpConfig(host="h", from_addr="a@b", implicit_tls=True)
    with pytest.raises(DeliveryConfigError, match="P_MISSING is not set"):
        SmtpChannel(SmtpConfig(host="h", from_addr="a@b", username_env="U", password_env="P_MISSING"),
                    environ={"U": "x"})


def test_config_from_env():
    """from_env reads ESPRESSO_SMTP_*; credentials are referenced by variable name."""
    env = {"ESPRESSO_SMTP_HOST": "mx.test", "ESPRESSO_SMTP_FROM": "shop@x.test", "ESPRESSO_SMTP_TLS": "implicit",
           "ESPRESSO_SMTP_USER": "u", "ESPRESSO_SMTP_PASSWORD": "pw-value"}
    config = SmtpConfig.from_env(env)
    assert (config.host, config.port, config.implicit_tls, config.starttls) == ("mx.test", 465, True, False)
    assert (config.username_env, config.password_env) == ("ESPRESSO_SMTP_USER", "ESPRESSO_SMTP_PASSWORD")
    assert "pw-value" not in repr(config)
    with pytest.raises(DeliveryConfigError, match="ESPRESSO_SMTP_TLS"):
        SmtpConfig.from_env({**env, "ESPRESSO_SMTP_TLS": "maybe"})
