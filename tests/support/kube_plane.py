"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for the test tier.

Everything listens on 127.0.0.1 only, with its own CA, token file and service-account keys, so tests
exercise the real API machinery (RBAC, watch, owner references, the pod log proxy) without a cluster.
There is no scheduler and no kubelet: ``tests.support.kube_node`` plays the node (see ``start_node_agent``).
The plane applies deploy/kubernetes/rbac.yaml at its start: ``gateway_kubeconfig`` authenticates as
its ServiceAccount with the token the controller-manager issued, while the test's own calls
(``request``) and ``kubeconfig`` are the admin's.
The binaries come from scripts/build-kube.sh; they are not on PyPI or in Debian.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import ROOT

DEFAULT_BIN = Path(os.environ.get("NEKZUS_KUBE_BIN", "/var/cache/nekzus-kube/bin"))
CONTEXT = "nekzus-test"
NODE_NAME = "nekzus-node"
SERVICE_CIDR = "10.96.0.0/24"
# The gateway runs as the ServiceAccount of the deployment manifest, with exactly its permissions.
GATEWAY_RBAC = ROOT / "deploy" / "kubernetes" / "rbac.yaml"
GATEWAY_NAMESPACE = "nekzus-system"
GATEWAY_ACCOUNT = "nekzus-gateway"
# No scheduler and no kubelet heartbeats through leases: the agent binds pods, so node IPAM and the
# node lifecycle controller (which would taint and evict from a node it thinks is silent) stay off.
CONTROLLERS = "*,-nodeipam,-nodelifecycle"
# Pods without a service-account token (no token controller round trip per fresh namespace), no
# not-ready taint on the fake node, and no webhooks that could send traffic to the service range.
DISABLED_ADMISSION = (
    "ServiceAccount,TaintNodesByCondition,MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
)

T = TypeVar("T")


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the process that binds it comes right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Polls ``check`` until it returns something other than None/False, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """Runs in the child: SIGTERM it when the pytest process dies without tearing down (kill -9)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ManagedProcess:
    """One child process with its output in a log file; stopping is idempotent."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        # The death signal follows the thread that forked: only safe to ask for it from the main thread
        # (a worker thread of asyncio.to_thread would take the child with it when it exits).
        on_main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if on_main else None,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raises with the end of the log when the process has already exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}; "
                f"end of {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class NodeAgentInfo:
    """What the fixture and tests need to know about the node agent (tests.support.kube_node)."""

    name: str
    state_dir: Path
    log_path: Path
    kubelet_port: int
    process: ManagedProcess

    @property
    def pid(self) -> int | None:
        return self.process.pid


class ApiError(Exception):
    """A non-2xx answer from the apiserver, with its decoded body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_manifest(path: Path) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML manifest, in order."""
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


# Kinds a manifest may hold: (plural, namespaced).
_KINDS = {
    "Namespace": ("namespaces", False),
    "ServiceAccount": ("serviceaccounts", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
}


def collection_path(doc: dict[str, Any]) -> str:
    """The API path a manifest object is created under (POST)."""
    plural, namespaced = _KINDS[doc["kind"]]
    version = doc["apiVersion"]
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    if namespaced:
        return f"{prefix}/namespaces/{doc['metadata']['namespace']}/{plural}"
    return f"{prefix}/{plural}"


def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount's token authenticates as (what RBAC subjects match)."""
    return f"system:serviceaccount:{namespace}:{name}"


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, driven with subprocesses.

    ``directory`` belongs to the plane: it is wiped on ``start`` so nothing from a previous run is
    reused. ``stop_apiserver``/``start_apiserver`` restart only the apiserver (same port, same etcd)
    for "the API goes away and comes back" tests.
    """

    def __init__(self, directory: Path, bin_dir: Path = DEFAULT_BIN) -> None:
        self.directory = Path(directory)
        self.bin_dir = Path(bin_dir)
        self.apiserver_bin = self.bin_dir / "kube-apiserver"
        self.controller_manager_bin = self.bin_dir / "kube-controller-manager"
        self.pki = self.directory / "pki"
        self.ca_file = self.pki / "ca.crt"
        self.kubeconfig = self.directory / "admin.kubeconfig"
        self.restricted_kubeconfig = self.directory / "restricted.kubeconfig"
        self.controller_manager_kubeconfig = self.directory / "controller-manager.kubeconfig"
        self.node_kubeconfig = self.directory / "node.kubeconfig"
        # The gateway's: the token of the ServiceAccount of deploy/kubernetes/rbac.yaml.
        self.gateway_kubeconfig = self.directory / "gateway.kubeconfig"
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.apiserver_port = 0
        self.admin_token = ""
        self.restricted_token = ""
        self.controller_manager_token = ""
        self.node_token = ""
        self.gateway_token = ""
        self.start_seconds: float | None = None
        self.node_agent: NodeAgentInfo | None = None
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._controller_manager: ManagedProcess | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def check_binaries(self) -> None:
        missing = [
            str(p) for p in (self.apiserver_bin, self.controller_manager_bin) if not os.access(p, os.X_OK)
        ]
        if missing:
            raise RuntimeError(
                f"kube binaries missing: {', '.join(missing)}; build them with `bash scripts/build-kube.sh` "
                "(or point NEKZUS_KUBE_BIN at a directory holding kube-apiserver and kube-controller-manager)"
            )
        if shutil.which("etcd") is None:
            raise RuntimeError(
                "etcd is not installed; scripts/build-kube.sh installs it (Debian etcd-server)"
            )

    def start(self, timeout: float = 90) -> None:
        """Starts etcd, the apiserver and the controller-manager; returns when pods can be created."""
        self.check_binaries()
        if self.processes():
            raise RuntimeError(f"control plane in {self.directory} is already running")
        began = time.monotonic()
        if self.directory.exists():
            shutil.rmtree(self.directory)
        (self.directory / "etcd").mkdir(parents=True)
        self.pki.mkdir()
        self._ssl = None
        self.etcd_port, self.etcd_peer_port, self.apiserver_port = free_port(), free_port(), free_port()
        self._write_credentials()
        try:
            self._start_etcd(timeout)
            self.start_apiserver(timeout)
            self._start_controller_manager()
            # The default namespace comes from the apiserver, its service account from the
            # controller-manager: seeing both proves the controllers are running.
            wait_until(
                lambda: self._exists(
                    "/api/v1/namespaces/default/serviceaccounts/default", self._controller_manager
                ),
                timeout=timeout,
                what="the default service account (controller-manager running)",
            )
            self.apply(load_manifest(GATEWAY_RBAC))
            self.gateway_token = self.write_service_account_kubeconfig(
                self.gateway_kubeconfig, GATEWAY_NAMESPACE, GATEWAY_ACCOUNT, timeout=timeout
            )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Terminates everything this plane started (node agent first); safe to call more than once."""
        for proc in (self.node_agent.process if self.node_agent else None, self._controller_manager):
            if proc is not None:
                proc.stop()
        self.stop_apiserver()
        if self._etcd is not None:
            self._etcd.stop()

    def stop_apiserver(self, grace: float = 3) -> None:
        """Stops the apiserver: SIGTERM, then SIGKILL after ``grace`` seconds.

        kube-apiserver 1.20 does not end open watches on SIGTERM and waits up to 60 s for them, so
        with clients connected the kill is what makes the API go away promptly (etcd keeps the data).
        """
        if self._apiserver is not None:
            self._apiserver.stop(timeout=grace)

    def start_apiserver(self, timeout: float = 60) -> None:
        """(Re)starts the apiserver on the same port against the same etcd and waits for /readyz."""
        if self._apiserver is not None and self._apiserver.running():
            return
        self._apiserver = ManagedProcess(
            "kube-apiserver", self._apiserver_argv(), self.directory / "kube-apiserver.log"
        )
        self._apiserver.start()
        wait_until(self._ready, timeout=timeout, what="kube-apiserver /readyz")
        wait_until(
            lambda: self._exists("/api/v1/namespaces/default", self._apiserver),
            timeout=timeout,
            what="the default namespace",
        )
        if self.gateway_kubeconfig.exists():
            # A restarted apiserver serves before its RBAC caches are filled, refusing every
            # ServiceAccount for a moment: the gateway's bindings hold again before this returns.
            account = (GATEWAY_NAMESPACE, GATEWAY_ACCOUNT)
            wait_until(
                lambda: self.allowed(account, "get", "nodes") and self.allowed(account, "get", "/version"),
                timeout=timeout,
                what="RBAC to grant the gateway's ServiceAccount again",
            )

    def processes(self) -> dict[str, ManagedProcess]:
        found = {
            "etcd": self._etcd,
            "kube-apiserver": self._apiserver,
            "kube-controller-manager": self._controller_manager,
            "node-agent": self.node_agent.process if self.node_agent else None,
        }
        return {name: proc for name, proc in found.items() if proc is not None and proc.running()}

    def start_node_agent(self, name: str = NODE_NAME, timeout: float = 30) -> NodeAgentInfo:
        """Starts ``python -m tests.support.kube_node`` and waits until its Node reports Ready."""
        if self.node_agent is not None and self.node_agent.process.running():
            return self.node_agent
        state_dir = self.directory / f"node-{name}"
        if state_dir.exists():
            shutil.rmtree(state_dir)
        state_dir.mkdir(parents=True)
        log_path = self.directory / f"node-{name}.log"
        argv = [
            sys.executable,
            "-m",
            "tests.support.kube_node",
            "--kubeconfig",
            str(self.node_kubeconfig),
            "--node",
            name,
            "--state-dir",
            str(state_dir),
        ]
        process = ManagedProcess(f"node agent {name}", argv, log_path, cwd=ROOT)
        process.start()
        info_file = state_dir / "agent.json"

        def agent_port() -> int | None:
            process.check_alive()
            try:
                return int(json.loads(info_file.read_text())["port"])
            except (OSError, ValueError, KeyError):
                return None

        try:
            port = wait_until(agent_port, timeout=timeout, what=f"node agent {name} to register")
            self.node_agent = NodeAgentInfo(name, state_dir, log_path, port, process)
            self.wait_node_ready(name, timeout=timeout)
        except BaseException:
            process.stop()
            raise
        return self.node_agent

    def wait_node_ready(self, name: str = NODE_NAME, timeout: float = 30) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.node_agent is not None:
                self.node_agent.process.check_alive()
            status, node = self.request("GET", f"/api/v1/nodes/{name}", check=False)
            if status != 200:
                return None
            conditions = node.get("status", {}).get("conditions") or []
            is_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            return node if is_ready else None

        return wait_until(ready, timeout=timeout, interval=0.1, what=f"node {name} Ready")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        check: bool = True,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        """A blocking API call as admin (or with ``token``): (status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener().open(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            decoded: Any = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        if check and not 200 <= status < 300:
            raise ApiError(status, decoded)
        return status, decoded

    def apply(self, documents: list[dict[str, Any]]) -> None:
        """Creates each object of a manifest as admin, in order (an object that exists is kept)."""
        for doc in documents:
            status, body = self.request("POST", collection_path(doc), doc, check=False)
            if status not in (201, 409):
                raise ApiError(status, body)

    def delete(self, documents: list[dict[str, Any]]) -> None:
        """Deletes each object of a manifest as admin; one that is already gone is fine."""
        for doc in reversed(documents):
            path = f"{collection_path(doc)}/{doc['metadata']['name']}"
            status, body = self.request("DELETE", path, check=False)
            if status not in (200, 202, 404):
                raise ApiError(status, body)

    def service_account_token(self, namespace: str, name: str, timeout: float = 30) -> str:
        """The token the controller-manager's token controller issued to a ServiceAccount.

        kube-apiserver 1.20 still has a token Secret per ServiceAccount, created a moment after the
        account and named in its ``secrets``.
        """

        def issued() -> str | None:
            if self._controller_manager is not None:
                self._controller_manager.check_alive()
            status, account = self.request(
                "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}", check=False
            )
            for ref in (account.get("secrets") or []) if status == 200 else []:
                code, secret = self.request(
                    "GET", f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}", check=False
                )
                token = (secret.get("data") or {}).get("token") if code == 200 else None
                if secret.get("type") == "kubernetes.io/service-account-token" and token:
                    return base64.b64decode(token).decode()
            return None

        return wait_until(issued, timeout=timeout, what=f"the token of service account {namespace}/{name}")

    def write_service_account_kubeconfig(
        self, path: Path, namespace: str, name: str, timeout: float = 30
    ) -> str:
        """Writes a kubeconfig that authenticates as the ServiceAccount; returns its token."""
        token = self.service_account_token(namespace, name, timeout)
        self._write_kubeconfig(path, service_account_user(namespace, name), token, self.ca_file.read_bytes())
        return token

    def allowed(
        self, account: tuple[str, str], verb: str, resource: str, *, group: str = "", namespace: str = ""
    ) -> bool:
        """Whether RBAC, as the apiserver sees it now, lets the ServiceAccount (namespace, name) do
        ``verb`` on ``resource`` ("deployments/scale" names a subresource, "/version" a path that is
        no resource); "" is cluster-wide."""
        plural, _, subresource = resource.partition("/")
        attributes: dict[str, str] = (
            {"verb": verb, "path": resource}
            if resource.startswith("/")
            else {
                "verb": verb,
                "group": group,
                "resource": plural,
                "subresource": subresource,
                "namespace": namespace,
            }
        )
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": service_account_user(*account),
                "groups": [
                    "system:authenticated",
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{account[0]}",
                ],
                "nonResourceAttributes" if resource.startswith("/") else "resourceAttributes": attributes,
            },
        }
        _, answer = self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer["status"].get("allowed"))

    def _opener(self) -> urllib.request.OpenerDirector:
        # No proxy from the environment: this traffic must stay on 127.0.0.1.
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.ssl_context())
        )

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def _ready(self) -> bool:
        assert self._apiserver is not None
        self._apiserver.check_alive()
        try:
            status, _ = self.request("GET", "/readyz", check=False, timeout=5)
        except (OSError, urllib.error.URLError):
            return False
        return status == 200

    def _exists(self, path: str, proc: ManagedProcess | None) -> bool:
        if proc is not None:
            proc.check_alive()
        try:
            status, _ = self.request("GET", path, check=False, timeout=5)
        except (OSError, urllib.error.URLError):
            return False
        return status == 200

    def _start_etcd(self, timeout: float) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            "etcd",
            "--name=nekzus",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=nekzus={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            "--logger=zap",
        ]
        self._etcd = ManagedProcess("etcd", argv, self.directory / "etcd.log")
        self._etcd.start()
        etcd = self._etcd

        def healthy() -> bool:
            etcd.check_alive()
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(self.etcd_url + "/health", timeout=2) as resp:
                    return bool(json.loads(resp.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        wait_until(healthy, timeout=timeout, what="etcd /health")

    def _apiserver_argv(self) -> list[str]:
        return [
            str(self.apiserver_bin),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            "--insecure-port=0",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--kubelet-preferred-address-types=InternalIP",
            # The reconciler would publish 127.0.0.1 as the kubernetes service endpoint, which the
            # API rejects (loopback) every ten seconds; nothing in the tests uses that endpoint.
            "--endpoint-reconciler-type=none",
            f"--disable-admission-plugins={DISABLED_ADMISSION}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def _start_controller_manager(self) -> None:
        argv = [
            str(self.controller_manager_bin),
            f"--kubeconfig={self.controller_manager_kubeconfig}",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            "--use-service-account-credentials=false",
            f"--controllers={CONTROLLERS}",
            # The default 20 QPS makes a 200-replica Deployment take ten seconds just to create pods.
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--profiling=false",
            "--v=1",
        ]
        self._controller_manager = ManagedProcess(
            "kube-controller-manager", argv, self.directory / "kube-controller-manager.log"
        )
        self._controller_manager.start()

    def _write_credentials(self) -> None:
        now = _now()
        ca_key = _new_key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nekzus-test-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        server_key = _new_key()
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ]
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        self.ca_file.write_bytes(ca_pem)
        (self.pki / "ca.key").write_bytes(_pem_key(ca_key))
        (self.pki / "apiserver.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        (self.pki / "apiserver.key").write_bytes(_pem_key(server_key))
        sa_key = _new_key()
        (self.pki / "sa.key").write_bytes(_pem_key(sa_key))
        (self.pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        for path in self.pki.iterdir():
            path.chmod(0o600)

        self.admin_token = base64.b32encode(os.urandom(20)).decode().lower()
        self.controller_manager_token = base64.b32encode(os.urandom(20)).decode().lower()
        self.node_token = base64.b32encode(os.urandom(20)).decode().lower()
        self.restricted_token = base64.b32encode(os.urandom(20)).decode().lower()
        rows = [
            f'{self.admin_token},admin,uid-admin,"system:masters"',
            f'{self.controller_manager_token},system:kube-controller-manager,uid-kcm,"system:masters"',
            f'{self.node_token},nekzus-node-agent,uid-node,"system:masters"',
            f"{self.restricted_token},restricted,uid-restricted",
        ]
        tokens = self.pki / "tokens.csv"
        tokens.write_text("\n".join(rows) + "\n")
        tokens.chmod(0o600)
        for path, user, token in (
            (self.kubeconfig, "admin", self.admin_token),
            (self.restricted_kubeconfig, "restricted", self.restricted_token),
            (
                self.controller_manager_kubeconfig,
                "system:kube-controller-manager",
                self.controller_manager_token,
            ),
            (self.node_kubeconfig, "nekzus-node-agent", self.node_token),
        ):
            self._write_kubeconfig(path, user, token, ca_pem)

    def _write_kubeconfig(self, path: Path, user: str, token: str, ca_pem: bytes) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": "default"}}
            ],
            "current-context": CONTEXT,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def stop_etcd(self) -> None:
        """Stops etcd (SIGTERM) and leaves the apiserver running without its storage."""
        if self._etcd is not None:
            self._etcd.stop()

    def start_etcd(self, timeout: float = 60) -> None:
        """Starts etcd again on its ports and data directory, and waits until the apiserver is
        ready with it."""
        if self._etcd is None or not self._etcd.running():
            self._start_etcd(timeout)
        wait_until(self._ready, timeout=timeout, what="kube-apiserver /readyz with etcd back")
