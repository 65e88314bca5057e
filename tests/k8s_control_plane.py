"""A throw-away etcd + kube-apiserver on loopback ports (envtest's KUBEBUILDER_ASSETS layout).

Token authentication (an admin token), RBAC + Node authorization, service-account tokens
signed by a key made here, so TokenRequest works. The API server can be stopped and started
again on the same port and etcd, to test an agent's reconnection.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=test-ca",
             "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(pki / "server.key"), "-out", str(pki / "server.csr"))
    (pki / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(pki / "server.csr"), "-CA", str(pki / "ca.crt"), "-CAkey",
             str(pki / "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", str(pki / "ext.cnf"),
             "-out", str(pki / "server.crt"))
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


class ControlPlane:
    def __init__(self, assets: str, workdir: Path, ready_timeout: float = 180.0) -> None:
        self.assets = assets
        self.workdir = workdir
        self.ready_timeout = ready_timeout
        self.pki = workdir / "pki"
        self.admin_token = secrets.token_hex(16)
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.etcd_port, self.etcd_peer_port, self.port = free_ports(3)
        self.url = f"https://127.0.0.1:{self.port}"

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        make_pki(self.pki)
        (self.pki / "tokens.csv").write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        etcd_args = [
            os.path.join(self.assets, "etcd"), "--name", "test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{self.etcd_peer_port}", "--unsafe-no-fsync",
        ]
        with open(self.workdir / "etcd.log", "ab") as out:
            self.etcd = subprocess.Popen(etcd_args, stdout=out, stderr=subprocess.STDOUT)
        self._wait(lambda: self._get(f"http://127.0.0.1:{self.etcd_port}/health", tls=False), "etcd", self.etcd)
        self.start_apiserver()
        self.write_kubeconfig(self.workdir / "admin.kubeconfig", "admin", self.admin_token)

    def start_apiserver(self) -> None:
        args = [
            os.path.join(self.assets, "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={self.pki / 'server.crt'}", f"--tls-private-key-file={self.pki / 'server.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}", f"--token-auth-file={self.pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
            "--enable-admission-plugins=NodeRestriction", "--disable-admission-plugins=ServiceAccount",
            # as kubeadm and every GPU cluster run it: the agent (like the operator's) is privileged
            "--allow-privileged=true",
            f"--cert-dir={self.pki / 'generated'}",
        ]
        with open(self.workdir / "apiserver.log", "ab") as out:
            self.apiserver = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self._wait(lambda: self._get(f"{self.url}/readyz", tls=True), "kube-apiserver", self.apiserver)

    def stop_apiserver(self) -> None:
        if self.apiserver is not None and self.apiserver.poll() is None:
            self.apiserver.send_signal(signal.SIGTERM)
            try:
                self.apiserver.wait(30)
            except subprocess.TimeoutExpired:
                self.apiserver.kill()
                self.apiserver.wait()
        self.apiserver = None

    def stop(self) -> None:
        self.stop_apiserver()
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(15)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()

    # -------------------------------------------------------------- helpers

    def _get(self, url: str, tls: bool) -> bool:
        try:
            if tls:
                ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.admin_token}"})
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    return bool(resp.read() == b"ok")
            with urllib.request.urlopen(url, timeout=2) as resp:
                return b'"health":"true"' in resp.read()
        except OSError:
            return False

    def _wait(self, probe: object, what: str, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if probe():  # type: ignore[operator]
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {self.workdir}")
            time.sleep(0.1)
        raise RuntimeError(f"{what} not ready after {self.ready_timeout}s; see {self.workdir}")

    def write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n    certificate-authority-data: {ca}\n"
            f"users:\n- name: {user}\n  user:\n    token: {token}\n"
            f"contexts:\n- name: test\n  context: {{cluster: test, user: {user}}}\ncurrent-context: test\n"
        )
        path.chmod(0o600)
        return path
