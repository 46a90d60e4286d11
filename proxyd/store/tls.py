"""TLS to the store (``rediss://``): the server's certificate is verified, always.

`StoreTLS(host, ca_file, name)` is the connection creator given to txredisapi (and to
the opt-out subscription) for a ``rediss://`` URL. The server's certificate must chain to a
certificate of `ca_file` (PEM, one or more; ``[store] ca_file``) or, without one, to the
system's trusted roots, and must name `host` (a DNS name or an IP address, as written in
the URL). A certificate that does not verify ends the handshake, and one error line says
why (``store rediss://...: TLS certificate refused: ...``, once per distinct reason; `name`
is the URL as logs show it). `refusal` keeps the last reason for the store client's errors.
"""
from __future__ import annotations

from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.cryptography import (verify_certificate_hostname,
                                           verify_certificate_ip_address)
from twisted.internet import ssl as tssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["StoreTLS", "load_trust"]

log = Logger(namespace="proxyd.store")

# the X509_V_ERR_* codes a store's certificate most often fails with
_X509_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate (not signed by a trusted CA)",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


def load_trust(ca_file: str) -> Any:
    """The trust root of the PEM certificates in `ca_file` (ValueError if it holds none),
    or the platform's trusted roots when `ca_file` is empty."""
    if not ca_file:
        return tssl.platformTrust()
    with open(ca_file, "rb") as f:
        data = f.read()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ValueError("%s: no PEM certificate in it" % ca_file)
    return tssl.trustRootFromCertificates(
        [tssl.Certificate(crypto.X509.from_cryptography(c)) for c in certs])


@implementer(IOpenSSLClientConnectionCreator)
class StoreTLS:
    """Client TLS connections that verify the certificate chain and the host name."""

    def __init__(self, host: str, ca_file: str = "", name: str = "") -> None:
        self.host = host
        self.name = name or host
        self.refusal = ""     # why the last handshake was refused ("" once one verifies)
        self._is_ip = bool(isIPAddress(host) or isIPv6Address(host))
        self._options = tssl.optionsForClientTLS(host, trustRoot=load_trust(ca_file))

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = self._options.clientConnectionForTLS(tlsProtocol)
        # our own check in place of Twisted's, so that a refusal can say why
        conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return conn

    def _verify(self, conn: Any, cert: Any, err: int, depth: int, ok: int) -> bool:
        try:
            if not ok:
                subject = cert.to_cryptography().subject.rfc4514_string() or "?"
                self._refused("%s (certificate of %r, depth %d)"
                              % (_X509_ERRORS.get(err, "X509 error %d" % err), subject, depth))
                return False
            if depth != 0:
                return True
            leaf = cert.to_cryptography()
            try:
                if self._is_ip:
                    verify_certificate_ip_address(leaf, self.host)
                else:
                    verify_certificate_hostname(leaf, self.host)
            except VerificationError as e:
                self._refused("the certificate does not name %s (%s)" % (self.host, e))
                return False
            self.refusal = ""
            return True
        except Exception:  # noqa: BLE001 - an exception in an OpenSSL callback is lost
            log.failure("while verifying the store's certificate")
            return False

    def _refused(self, why: str) -> None:
        if why != self.refusal:
            log.error("store {name}: TLS certificate refused: {why}", name=self.name, why=why)
        self.refusal = why
