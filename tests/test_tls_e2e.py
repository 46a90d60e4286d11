"""TLS is configuration: an ssl: client listener and a tls: upstream with verification."""
from __future__ import annotations

import datetime
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config
from .test_relay_e2e import read_pdu


def make_ca_and_cert(d):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxyd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca").mkdir()
    (d / "ca" / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / "ca", d / "key.pem", d / "cert.pem"


def tls_config(port: int, key, cert, sim: int, ca, host: str = "localhost") -> str:
    """A TLS listener and a TLS upstream that verifies the simulator's certificate."""
    return config_text(port, sim,
                       smpp={"listen": ["ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s"
                                        % (port, key, cert)]},
                       upstream={"name": "secure", "password": None,
                                 "connect": "tls:host=%s:port=%d:trustRoots=%s" % (host, sim, ca)},
                       account={"password": "pw"})


def test_tls_listener_and_verified_tls_upstream(tmp_path):
    ca, key, cert = make_ca_and_cert(tmp_path)
    sim_port = free_port()
    sim, _, record = start_sim(tmp_path, sim_port, "--listen",
                               "ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s"
                               % (sim_port, key, cert))
    port = free_port()
    cfg = write_config(tmp_path, tls_config(port, key, cert, sim_port, ca))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream secure bound" in proxyd.text(), "TLS upstream bind", 20)
        admin(tmp_path, cfg, "topup", "acme", "1000")
        ctx = ssl.create_default_context(cafile=str(ca / "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(P.encode(P.BindTransceiver(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
        assert read_pdu(s).status == 0
        s.sendall(P.encode(P.SubmitSm(seq=2, source_addr=b"10690001",
                                      destination_addr=b"13800138000",
                                      short_message=b"over tls")))
        r = read_pdu(s)
        assert (r.command_id, r.status) == (C.SUBMIT_SM_RESP, 0)
        s.close()
        wait_until(lambda: len(read_record(record)) == 1, "message at the operator", 10)
    finally:
        proxyd.stop()
        sim.stop()


def test_tls_upstream_with_wrong_name_is_refused(tmp_path):
    ca, key, cert = make_ca_and_cert(tmp_path)
    sim_port = free_port()
    sim, _, record = start_sim(tmp_path, sim_port, "--listen",
                               "ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s"
                               % (sim_port, key, cert))
    port = free_port()
    text = tls_config(port, key, cert, sim_port, ca, host="127.0.0.1")   # not the cert's name
    cfg = write_config(tmp_path, text)
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: proxyd.text().count("connection lost before bound") >= 2,
                   "verification failures", 20)
        assert "VerificationError" in proxyd.text()
        assert "upstream secure bound" not in proxyd.text()
    finally:
        proxyd.stop()
        sim.stop()
