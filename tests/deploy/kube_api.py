"""A real Kubernetes API server for the chart's tests: Debian's etcd and kube-apiserver (built by
:mod:`labelloop.stack.kube`), on loopback ports of their own, with KEDA's and the Prometheus
Operator's CRDs installed. No scheduler, kubelet or container runtime: what is judged is what
the API server admits (schemas, strict field validation, admission), not what would run."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from labelloop.stack.base import free_port
from labelloop.stack.kube import crd_files, ensure_apiserver, ensure_etcd

TOKEN = "labelloop-test-admin"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(folder: Path) -> None:
    """A CA, the server's certificate for 127.0.0.1, and the service-account key pair."""
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=folder)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=labelloop-test-ca",
        "-out", "ca.crt", cwd=folder,
    )  # fmt: skip
    _openssl("genrsa", "-out", "server.key", "2048", cwd=folder)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver", "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=folder,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


@dataclass
class KubeApi:
    """etcd and kube-apiserver, started and stopped together; ``kubectl`` runs against them."""

    folder: Path
    cache_dir: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.folder / "kubeconfig"

    def start(self, timeout_s: float = 90) -> None:
        apiserver = ensure_apiserver(self.cache_dir, progress=print)
        etcd = ensure_etcd(self.cache_dir, progress=print)
        self.folder.mkdir(parents=True, exist_ok=True)
        _certificates(self.folder)
        (self.folder / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
        client, peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(etcd), "--data-dir", str(self.folder / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            ],
        )  # fmt: skip
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver), f"--etcd-servers=http://127.0.0.1:{client}",
                "--bind-address=127.0.0.1", f"--secure-port={self.port}",
                f"--tls-cert-file={self.folder / 'server.crt'}",
                f"--tls-private-key-file={self.folder / 'server.key'}",
                f"--token-auth-file={self.folder / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.folder / 'sa.pub'}",
                f"--service-account-signing-key-file={self.folder / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
            ],
        )  # fmt: skip
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: test, cluster: {{server: 'https://127.0.0.1:{self.port}', "
            f"certificate-authority: '{self.folder / 'ca.crt'}'}}}}]\n"
            f"users: [{{name: admin, user: {{token: {TOKEN}}}}}]\n"
            "contexts: [{name: test, context: {cluster: test, user: admin}}]\n"
            "current-context: test\n"
        )
        self._wait_ready(timeout_s)
        self.kubectl("apply", "--server-side", *(f"--filename={path}" for path in crd_files()))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"https://127.0.0.1:{self.port}/readyz"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        trusted = ssl.create_default_context(cafile=str(self.folder / "ca.crt"))
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            try:
                answer = httpx.get(url, headers=headers, verify=trusted)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        log = (self.folder / "kube-apiserver.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"kube-apiserver not ready on {self.port}:\n{log}")

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError("kubectl is needed to talk to the test API server")
        result = subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.processes.clear()
