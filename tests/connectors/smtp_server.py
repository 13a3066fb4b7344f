"""An SMTP server on loopback (aiosmtpd) with STARTTLS required and AUTH (PLAIN/LOGIN).

The certificate is self-signed for 127.0.0.1/localhost, made at test time with the
`openssl` command; `ca_file` is the certificate to trust. Accepted mails are parsed and
kept in `messages`; `reject_rcpt` maps a recipient to an SMTP reply to refuse it with.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers import free_port

USER, PASSWORD = "espresso", "s3cret-pw"


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return cert, key


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.server.reject_rcpt.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.server.lock:
            self.server.messages.append(mail)
            self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), session.ssl is not None,
                                          getattr(session, "authenticated", False)))
        return "250 Message accepted"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER \
        and auth_data.password.decode() == PASSWORD
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    def __init__(self, directory: Path) -> None:
        self.ca_file, key = make_cert(directory)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.ca_file, key)
        self.port = free_port()
        self.lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple] = []
        self.reject_rcpt: dict[str, str] = {}
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, tls_context=ctx, require_starttls=True,
            auth_required=True, auth_require_tls=True, authenticator=_authenticator)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()
            self.reject_rcpt.clear()
