"""Real peers for integration tests: kube-apiserver + etcd, and Docker Model Runner.

The binaries come from ``tests/peers/build`` (Go modules, cached under
``$LOCALMODEL_PEERS_DIR`` or ``~/.cache/localmodel-peers``). Make the fixtures
visible with ``pytest_plugins = ["tests.support.peers"]`` in the top-level
``tests/conftest.py`` (or import them into a conftest).

Environment:

``LOCALMODEL_PEERS_FILE``
    a file holding the stdout of ``tests/peers/build`` (``name=/path`` lines);
    when set, the build script is not run from inside pytest. CI should build
    the peers before pytest, since a cold build takes minutes and the per-test
    timeout also covers fixture setup.
``LOCALMODEL_PEERS=skip``
    a test whose peer is unavailable is skipped instead of failed.

Fixtures (all need the ``peers`` marker on the test):

``peer_binaries`` (session)   -> :class:`PeerBinaries`
``kube_apiserver`` (session)  -> :class:`KubeAPIServer` (etcd + kube-apiserver, RBAC, token auth)
``kube_namespace`` (function) -> name of a fresh namespace (created with the admin token)
``model_registry`` (session)  -> :class:`ModelRegistry` (in-memory OCI registry with tiny GGUF models)
``dmr_server`` (function)     -> :class:`DMRServer` (a fresh model-runner with the models pulled)
``dmr_server_factory`` (function) -> callable(**kw) -> :class:`DMRServer`, for custom setups
    (``release="1.0"`` runs model-runner v1.0.10 instead of v1.2.9: see ``DMR_RELEASES``)

Helpers: :func:`apply_manifest`, :func:`wait_for_crd_established`,
:func:`write_kubeconfig`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.util import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "peers" / "build"

PEER_NAMES = (
    "kube-apiserver",
    "etcd",
    "model-runner",
    "model-runner-1.0",
    "model-registry",
    "llama-server-dir",
    "model-assets",
    "kstatus",
    "argocd-lua",
    "helm",
    "kubectl",
    "kube-controller-manager",
)

# Model references pulled into every dmr_server (user-facing refs, as a
# LocalModel spec would name them). DMR stores them under the fully qualified
# name "docker.io/<ref>", exactly as for a real Docker Hub pull, because the
# local registry is configured as a docker.io mirror.
MAIN_MODEL = "ai/smollm2:latest"
DRAFT_MODEL = "ai/smollm2:135M-Q4_0"
EMBEDDING_MODEL = "ai/mxbai-embed-large:latest"
# In the registry but not pulled at start: a model to pull in a test, and a second tag of
# MAIN_MODEL's artifact (same file, same options, hence the same digest and model ID).
FRESH_MODEL = "ai/embeddinggemma:latest"
SECOND_TAG = "ai/smollm2:360M-Q4_K_M"


# --------------------------------------------------------------------------- #
# Building / locating the binaries
# --------------------------------------------------------------------------- #


@dataclass
class PeerBinaries:
    """Paths of the peer binaries (``""`` for a peer that failed to build)."""

    paths: dict[str, str]
    log: str = ""
    source: str = ""

    def get(self, name: str) -> str:
        return self.paths.get(name, "")

    def require(self, *names: str) -> dict[str, str]:
        """Return the paths of ``names``; fail (or skip) the test loudly if any is missing."""
        missing = [n for n in names if not self.paths.get(n) or not os.path.exists(self.paths[n])]
        if not missing:
            return {n: self.paths[n] for n in names}
        tail = "\n".join(self.log.splitlines()[-40:])
        msg = (
            f"peer(s) {', '.join(missing)} unavailable: the build step "
            f"{' / '.join('build ' + n for n in missing)} of tests/peers/build failed "
            f"or was not run (source: {self.source}).\n"
            f"Rebuild with: tests/peers/build --only {','.join(missing)}\n"
            f"--- build log tail ---\n{tail}"
        )
        if os.environ.get("LOCALMODEL_PEERS") == "skip":
            pytest.skip(f"LOCALMODEL_PEERS=skip: peer(s) {', '.join(missing)} unavailable")
        pytest.fail(msg, pytrace=False)
        raise AssertionError("unreachable")  # pragma: no cover


def parse_build_output(text: str) -> dict[str, str]:
    paths: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name in PEER_NAMES:
            paths[name] = value.strip()
    return paths


_peers_lock = threading.Lock()
_peers_cache: PeerBinaries | None = None


def load_peer_binaries() -> PeerBinaries:
    """Read ``$LOCALMODEL_PEERS_FILE`` or run ``tests/peers/build`` (once per process)."""
    global _peers_cache
    with _peers_lock:
        if _peers_cache is not None:
            return _peers_cache
        peers_file = os.environ.get("LOCALMODEL_PEERS_FILE")
        if peers_file:
            p = Path(peers_file)
            if not p.is_file():
                _peers_cache = PeerBinaries({}, f"LOCALMODEL_PEERS_FILE={peers_file} does not exist", peers_file)
            else:
                log_file = p.with_suffix(p.suffix + ".log")
                log = log_file.read_text(errors="replace") if log_file.is_file() else ""
                _peers_cache = PeerBinaries(
                    parse_build_output(p.read_text()), log, f"LOCALMODEL_PEERS_FILE={peers_file}"
                )
        else:
            try:
                proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600, cwd=REPO_ROOT)
                _peers_cache = PeerBinaries(parse_build_output(proc.stdout), proc.stderr, str(BUILD_SCRIPT))
            except (OSError, subprocess.SubprocessError) as exc:
                _peers_cache = PeerBinaries({}, f"running {BUILD_SCRIPT} failed: {exc!r}", str(BUILD_SCRIPT))
        return _peers_cache


@pytest.fixture(scope="session")
def peer_binaries() -> PeerBinaries:
    return load_peer_binaries()


# --------------------------------------------------------------------------- #
# Process helpers
# --------------------------------------------------------------------------- #


class Proc:
    """A child process in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout_pipe: bool = False,
    ):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with code {self.popen.returncode}; log {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group we created, SIGKILL it after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Children (llama-server runners) may outlive their parent: the group is ours.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, procs: Iterable[Proc] = (), interval: float = 0.05
) -> float:
    """Poll ``check`` until true; raise with process logs on timeout or if a process died."""
    t0 = time.monotonic()
    last_exc: BaseException | None = None
    while True:
        for p in procs:
            p.check_alive()
        try:
            if check():
                return time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - polling
            last_exc = exc
        if time.monotonic() - t0 > timeout:
            logs = "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log_tail()}" for p in procs)
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})\n{logs}")
        time.sleep(interval)


# --------------------------------------------------------------------------- #
# kube-apiserver + etcd
# --------------------------------------------------------------------------- #


def write_kubeconfig(path: Path, server: str, token: str, user: str, namespace: str = "default") -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localmodel-test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "localmodel-test", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _rsa_private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


@dataclass
class KubeAPIServer:
    url: str
    admin_kubeconfig: str
    operator_kubeconfig: str
    admin_token: str
    operator_token: str
    operator_user: str
    etcd_url: str
    workdir: Path
    startup_seconds: float
    procs: list[Proc] = field(default_factory=list)

    def api_client(self, kubeconfig: str | None = None):
        """A ``kubernetes.client.ApiClient`` for ``kubeconfig`` (admin by default)."""
        return kube_api_client(kubeconfig or self.admin_kubeconfig)

    def http(self, token: str | None = None) -> httpx.Client:
        """An httpx client for raw API calls (admin token by default; TLS not verified)."""
        return httpx.Client(
            base_url=self.url,
            verify=False,
            timeout=30,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )

    def new_namespace(self, prefix: str = "t") -> str:
        """Create a fresh namespace (admin). Namespaces never finish deleting without
        kube-controller-manager, so they are simply left behind."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with self.http() as c:
            r = c.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            r.raise_for_status()
        return name

    def apply(self, manifest: str | os.PathLike | dict | list, namespace: str | None = None) -> list[dict]:
        return apply_manifest(self.admin_kubeconfig, manifest, namespace=namespace)


def kube_api_client(kubeconfig: str):
    """A ``kubernetes.client.ApiClient`` for ``kubeconfig`` (TLS is not verified)."""
    import urllib3
    from kubernetes import config

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    return config.new_client_from_config(config_file=str(kubeconfig))


def _manifest_docs(manifest: str | os.PathLike | dict | list) -> list[dict]:
    if isinstance(manifest, dict):
        docs: list[Any] = [manifest]
    elif isinstance(manifest, list):
        docs = list(manifest)
    else:
        text = str(manifest)
        p = Path(text)
        if "\n" not in text and p.exists():
            text = p.read_text()
        docs = list(yaml.safe_load_all(text))
    out: list[dict] = []
    for d in docs:
        if not d:
            continue
        if d.get("kind", "").endswith("List") and "items" in d:
            out.extend(i for i in d["items"] if i)
        else:
            out.append(d)
    return out


def apply_manifest(
    kubeconfig: str | os.PathLike,
    manifest: str | os.PathLike | dict | list,
    namespace: str | None = None,
    field_manager: str = "localmodel-tests",
) -> list[dict]:
    """Server-side apply every document of ``manifest`` (a path, YAML text, a dict or a list
    of dicts); works for CRDs and for custom resources of CRDs applied earlier (discovery is
    refreshed per document). Namespaced objects without a namespace go to ``namespace`` or
    "default". Returns the applied objects as dicts."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    api = kube_api_client(str(kubeconfig))
    results: list[dict] = []
    try:
        for doc in _manifest_docs(manifest):
            dyn = DynamicClient(api)
            try:
                res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            except ResourceNotFoundError:
                dyn.resources.invalidate_cache()
                res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            ns = None
            if res.namespaced:
                ns = doc.get("metadata", {}).get("namespace") or namespace or "default"
                doc = {**doc, "metadata": {**doc.get("metadata", {}), "namespace": ns}}
            obj = dyn.server_side_apply(
                res,
                body=doc,
                name=doc["metadata"]["name"],
                namespace=ns,
                field_manager=field_manager,
                force_conflicts=True,
            )
            results.append(obj.to_dict())
    finally:
        api.close()
    return results


def wait_for_crd_established(kubeconfig: str | os.PathLike, name: str, timeout: float = 30.0) -> dict:
    """Wait until CRD ``name`` (e.g. ``localmodels.localmodel.io``) is Established and its
    resource is served (visible in discovery). Returns the CRD as a dict."""
    from kubernetes import client
    from kubernetes.dynamic import DynamicClient

    api = kube_api_client(str(kubeconfig))
    try:
        ext = client.ApiextensionsV1Api(api)
        crd: dict = {}

        def established() -> bool:
            nonlocal crd
            obj = ext.read_custom_resource_definition(name)
            crd = api.sanitize_for_serialization(obj)
            conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conds.get("Established") != "True":
                return False
            group = crd["spec"]["group"]
            plural = crd["spec"]["names"]["plural"]
            for v in crd["spec"]["versions"]:
                if not v.get("served"):
                    continue
                resp = DynamicClient(api).request("get", f"/apis/{group}/{v['name']}")
                if plural not in {r.name for r in resp.resources}:
                    return False
            return True

        wait_until(f"CRD {name} established", established, timeout, interval=0.1)
        return crd
    finally:
        api.close()


def start_kube_apiserver(binaries: PeerBinaries, workdir: Path, ready_timeout: float = 60.0) -> KubeAPIServer:
    paths = binaries.require("etcd", "kube-apiserver")
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[Proc] = []
    try:
        # etcd
        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = Proc(
            "etcd",
            [
                paths["etcd"],
                "--name=default",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            workdir / "etcd.log",
        )
        procs.append(etcd)
        wait_until("etcd /health", lambda: httpx.get(f"{etcd_url}/health", timeout=2).status_code == 200, 30, [etcd])

        # credentials
        key_file = workdir / "sa.key"
        key_file.write_bytes(_rsa_private_key_pem())
        admin_token = secrets.token_hex(16)
        operator_token = secrets.token_hex(16)
        operator_user = "localmodel-operator"
        tokens = workdir / "tokens.csv"
        tokens.write_text(
            f'{admin_token},admin,admin-uid,"system:masters"\n{operator_token},{operator_user},operator-uid\n'
        )
        (workdir / "certs").mkdir(exist_ok=True)

        # kube-apiserver
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        apiserver = Proc(
            "kube-apiserver",
            [
                paths["kube-apiserver"],
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # 127.0.0.1 is rejected by the default (lease) endpoint reconciler.
                "--endpoint-reconciler-type=none",
                f"--secure-port={port}",
                f"--cert-dir={workdir / 'certs'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={key_file}",
                f"--service-account-signing-key-file={key_file}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                f"--token-auth-file={tokens}",
                "--allow-privileged=true",
                "--v=1",
            ],
            workdir / "kube-apiserver.log",
        )
        procs.append(apiserver)

        def ready() -> bool:
            r = httpx.get(f"{url}/readyz", verify=False, timeout=5, headers={"Authorization": f"Bearer {admin_token}"})
            return r.status_code == 200

        wait_until("kube-apiserver /readyz", ready, ready_timeout, [etcd, apiserver], interval=0.2)
        admin_kc = write_kubeconfig(workdir / "admin.kubeconfig", url, admin_token, "admin")
        operator_kc = write_kubeconfig(workdir / "operator.kubeconfig", url, operator_token, operator_user)
        return KubeAPIServer(
            url=url,
            admin_kubeconfig=str(admin_kc),
            operator_kubeconfig=str(operator_kc),
            admin_token=admin_token,
            operator_token=operator_token,
            operator_user=operator_user,
            etcd_url=etcd_url,
            workdir=workdir,
            startup_seconds=time.monotonic() - t0,
            procs=procs,
        )
    except BaseException:
        for p in reversed(procs):
            p.stop()
        raise


@pytest.fixture(scope="session")
def kube_apiserver(peer_binaries: PeerBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """etcd + kube-apiserver (envtest style) on 127.0.0.1, for the whole session."""
    peer_binaries.require("etcd", "kube-apiserver")
    try:
        kas = start_kube_apiserver(peer_binaries, tmp_path_factory.mktemp("kube"))
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"starting etcd/kube-apiserver failed: {exc}", pytrace=False)
    try:
        yield kas
    finally:
        for p in reversed(kas.procs):
            p.stop()


@pytest.fixture
def kube_namespace(kube_apiserver: KubeAPIServer) -> str:
    """A fresh namespace for this test."""
    return kube_apiserver.new_namespace()


# --------------------------------------------------------------------------- #
# Model registry + Docker Model Runner
# --------------------------------------------------------------------------- #

# The model-runner releases the version matrix runs: short name -> (peer name, version).
# v1.0.10 has no registry-mirror setting: DEFAULT_REGISTRY + INSECURE_REGISTRY point its pulls of
# `ai/x` at the local registry instead (it stores them as `ai/x:tag`, without v1.2.9's `docker.io/`).
DMR_RELEASES: dict[str, tuple[str, str]] = {
    "1.2": ("model-runner", "v1.2.9"),
    "1.0": ("model-runner-1.0", "v1.0.10"),
}
DEFAULT_RELEASE = "1.2"


@dataclass
class ModelRegistry:
    """An in-memory OCI registry (model-runner's testregistry) holding tiny GGUF models."""

    host: str  # "127.0.0.1:PORT"
    models: dict[str, str]  # ref -> description
    proc: Proc
    startup_seconds: float

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def start_model_registry(
    binaries: PeerBinaries, workdir: Path, models: dict[str, str] | None = None, timeout: float = 30.0
) -> ModelRegistry:
    """``models`` maps ``repo:tag`` to ``ASSET[,pad=BYTES][,context-size=N][,license=FILE]`` where
    ASSET is a file name in the model-assets dir (dummy.gguf) or an absolute GGUF path, and ``pad``
    appends zero bytes to a copy of it (a distinct weights blob)."""
    paths = binaries.require("model-registry", "model-assets")
    assets = Path(paths["model-assets"])
    if models is None:
        # Distinct context sizes give distinct config digests, hence distinct model IDs.
        models = {
            MAIN_MODEL: "dummy.gguf,context-size=8192,license=license.txt",
            DRAFT_MODEL: "dummy.gguf,context-size=2048",
            EMBEDDING_MODEL: "dummy.gguf,context-size=512",
            # Padded: its weights are a new 3 MiB blob, so its pull downloads and reports progress.
            FRESH_MODEL: "dummy.gguf,pad=3145728,context-size=1024",
            SECOND_TAG: "dummy.gguf,context-size=8192,license=license.txt",
        }
    argv = [paths["model-registry"], "--addr", "127.0.0.1:0"]
    for ref, spec in models.items():
        parts = spec.split(",")
        parts[0] = str(assets / parts[0]) if not os.path.isabs(parts[0]) else parts[0]
        parts = [
            f"license={assets / p.split('=', 1)[1]}"
            if p.startswith("license=") and not os.path.isabs(p.split("=", 1)[1])
            else p
            for p in parts
        ]
        argv += ["--model", f"{ref}={','.join(parts)}"]
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    proc = Proc("model-registry", argv, workdir / "model-registry.log", stdout_pipe=True)
    assert proc.popen.stdout is not None
    result: dict[str, str] = {}

    def reader() -> None:
        assert proc.popen.stdout is not None
        for raw in proc.popen.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("READY "):
                result["host"] = line.split()[1]
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if "host" not in result:
        proc.stop()
        raise RuntimeError(f"model-registry did not become ready in {timeout}s:\n{proc.log_tail()}")
    return ModelRegistry(host=result["host"], models=dict(models), proc=proc, startup_seconds=time.monotonic() - t0)


@pytest.fixture(scope="session")
def model_registry(peer_binaries: PeerBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRegistry]:
    peer_binaries.require("model-registry", "model-assets")
    try:
        reg = start_model_registry(peer_binaries, tmp_path_factory.mktemp("registry"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield reg
    finally:
        reg.proc.stop()


class DMRServer:
    """A real Docker Model Runner (``model-runner`` built from github.com/docker/model-runner)
    running the fake llama-server, on ``http://127.0.0.1:<port>``.

    Attributes: ``url``, ``port``, ``models_path``, ``workdir``, ``log_path``, ``registry``,
    ``models`` (refs pulled: ``{ref: tag as stored}``, e.g. ``{"ai/smollm2:latest":
    "docker.io/ai/smollm2:latest"}``), ``model``, ``draft_model``, ``embedding_model``,
    ``fresh_model`` and ``second_tag`` (in the registry, not pulled), ``startup_seconds``.
    """

    def __init__(
        self,
        binaries: PeerBinaries,
        workdir: Path,
        registry: ModelRegistry | None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        release: str = DEFAULT_RELEASE,
    ):
        peer, self.version = DMR_RELEASES[release]
        self.release = release
        paths = binaries.require(peer, "llama-server-dir")
        self.binary = paths[peer]
        self.llama_server_dir = paths["llama-server-dir"]
        if release == "1.0":
            # v1.0.10 runs `com.docker.llama-server` from LLAMA_SERVER_PATH (later releases: `llama-server`).
            linked = workdir / "llama-bin"
            linked.mkdir(parents=True, exist_ok=True)
            link = linked / "com.docker.llama-server"
            if not link.exists():
                link.symlink_to(Path(self.llama_server_dir) / "llama-server")
            self.llama_server_dir = str(linked)
        self.workdir = workdir
        self.registry = registry
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models_path = workdir / "models"
        self.run_dir = workdir / "run"  # CWD: runner sockets inference-runner-N.sock go here
        self.argv_dir = workdir / "llama-argv"
        self.log_path = workdir / "model-runner.log"
        self.extra_env = dict(env or {})
        self.models: dict[str, str] = {}
        self.model = MAIN_MODEL
        self.draft_model = DRAFT_MODEL
        self.embedding_model = EMBEDDING_MODEL
        self.fresh_model = FRESH_MODEL  # in the registry, not pulled at start
        self.second_tag = SECOND_TAG  # another tag of `model`'s artifact, not pulled at start
        self.proc: Proc | None = None
        self.startup_seconds = 0.0
        for d in (self.models_path, self.run_dir, self.argv_dir, workdir / "home", workdir / "logs"):
            d.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MODEL_RUNNER_", "LLAMA_", "DMR_", "FAKE_LLAMA_"))
            and k not in ("DEFAULT_REGISTRY", "INSECURE_REGISTRY", "MODELS_PATH", "DISABLE_METRICS")
        }
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
        env.update(
            {
                "MODEL_RUNNER_PORT": str(self.port),
                "MODELS_PATH": str(self.models_path),
                "LLAMA_SERVER_PATH": self.llama_server_dir,
                "DISABLE_SERVER_UPDATE": "1",
                "MODEL_RUNNER_LOG_DIR": str(self.workdir / "logs"),
                "HOME": str(self.workdir / "home"),
                "FAKE_LLAMA_ARGV_DIR": str(self.argv_dir),
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
            }
        )
        if self.registry is not None and self.release == "1.0":
            # No mirror setting in v1.0.10: the local registry becomes the default registry.
            env["DEFAULT_REGISTRY"] = self.registry.host
            env["INSECURE_REGISTRY"] = "true"
        elif self.registry is not None:
            # Pulls of docker.io/* (i.e. "ai/smollm2") are served by the local registry.
            env["MODEL_RUNNER_REGISTRY_MIRRORS"] = self.registry.url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> float:
        """Start the server and wait until ``GET /models`` answers 200 and llama.cpp is
        installed (``/engines/status`` reports it Running). Returns the seconds it took."""
        t0 = time.monotonic()
        self.proc = Proc("model-runner", [self.binary], self.log_path, env=self.env(), cwd=self.run_dir)

        def ready() -> bool:
            if httpx.get(f"{self.url}/models", timeout=2).status_code != 200:
                return False
            status = httpx.get(f"{self.url}/engines/status", timeout=2).json()
            # "Running: llama.cpp ..." (v1.2.9), "running llama.cpp version: ..." (v1.0.10)
            return str(status.get("llama.cpp", "")).lower().startswith("running")

        wait_until("model-runner ready", ready, timeout, [self.proc])
        self.startup_seconds = time.monotonic() - t0
        return self.startup_seconds

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self, timeout: float = 60.0) -> float:
        """Stop and start again on the same port with the same model store: the stored
        ``_configure`` configs are lost (they live in memory), the models are not."""
        self.stop()
        return self.start(timeout)

    def pull(self, ref: str, timeout: float = 60.0) -> list[dict]:
        """``POST /models/create`` and check the NDJSON stream ends in success."""
        with httpx.stream(
            "POST",
            f"{self.url}/models/create",
            json={"from": ref},
            headers={"Accept": "application/json"},
            timeout=timeout,
        ) as r:
            body = r.read().decode()
            if r.status_code != 200:
                raise RuntimeError(f"pull {ref}: HTTP {r.status_code}: {body.strip()}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not any(line.get("type") == "success" for line in lines):
            raise RuntimeError(f"pull {ref}: no success line in {body!r}")
        return lines

    def pull_models(self, refs: Iterable[str]) -> dict[str, str]:
        for ref in refs:
            self.pull(ref)
        listed = httpx.get(f"{self.url}/models", timeout=10).json()
        tags = [t for m in listed for t in m.get("tags") or []]
        for ref in refs:
            self.models[ref] = next((t for t in tags if t.endswith("/" + ref) or t == ref), ref)
        return self.models

    def llama_argv(self) -> list[list[str]]:
        """argv of every llama-server runner DMR has started so far (oldest first)."""
        files = sorted(self.argv_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        return [json.loads(p.read_text())["argv"] for p in files]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def dmr_server_factory(
    peer_binaries: PeerBinaries, model_registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., DMRServer]]:
    """``dmr_server_factory(models=[...], env={...}, port=None, registry=True, release="1.2") -> DMRServer``:
    start a fresh model-runner of ``release`` (a key of DMR_RELEASES) and pull ``models`` (default: main,
    draft and embedding)."""
    peer_binaries.require("llama-server-dir")
    servers: list[DMRServer] = []

    def make(
        models: Iterable[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        registry: bool = True,
        release: str = DEFAULT_RELEASE,
    ) -> DMRServer:
        srv = DMRServer(
            peer_binaries,
            tmp_path_factory.mktemp("dmr"),
            model_registry if registry else None,
            env=env,
            port=port,
            release=release,
        )
        servers.append(srv)
        try:
            srv.start()
            srv.pull_models(list(models) if models is not None else [MAIN_MODEL, DRAFT_MODEL, EMBEDDING_MODEL])
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(
                f"starting model-runner failed: {exc}\n--- model-runner log ---\n{srv.log_tail()}", pytrace=False
            )
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def dmr_server(dmr_server_factory: Callable[..., DMRServer]) -> DMRServer:
    """A fresh model-runner with ai/smollm2:latest, ai/smollm2:135M-Q4_0 (draft) and
    ai/mxbai-embed-large:latest pulled (stored as docker.io/<ref>)."""
    return dmr_server_factory()
