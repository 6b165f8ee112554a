"""Redis servers, a Redis Cluster, network namespaces and ipcfs daemons on a Redis backend,
for the tests of `--backend redis://...` (contract: spec/interface.md, "Beyond one host").

Everything here is started by the test and ended by it, whatever happens: redis-server
processes are the test's children, stopped by pid (never by name); namespaces and veth
pairs get names unique to the test process and are deleted at teardown; mounts are
unmounted. Servers listen on free loopback ports (and, for the namespace test, on the
root-side addresses of the test's own veth pairs), so runs in parallel do not collide.

A tool that is not installed skips the test on a developer machine; with CI=true it fails
the test instead (CI must have everything; scripts/install-deps.sh installs it).

Import what a test file needs: `from redis_servers import redis_server, two_mounts`; the
fixtures apply in the modules that import them."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import IPCFS_BIN, MOUNT_DEADLINE_S, Mount, check_clean_exit, is_mounted

START_DEADLINE_S = 15.0  # a redis-server answering PING, a cluster reaching state ok
STOP_DEADLINE_S = 10.0
CLUSTER_DEADLINE_S = 60.0


# ---------------------------------------------------------------- tools

def require_tools(*names):
    """The path of each tool; a missing one skips the test, or fails it when CI=true."""
    paths = [shutil.which(n) or shutil.which(n, path="/usr/sbin:/sbin:/usr/bin:/bin")
             for n in names]
    missing = [n for n, p in zip(names, paths) if p is None]
    if missing:
        why = f"not installed: {', '.join(missing)} (scripts/install-deps.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return paths


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port(cluster_bus=False):
    """A TCP port free right now on every address (and, for a cluster node, its bus port
    port + 10000 too). Another process may still take it before the server binds it:
    RedisServer.start retries with another port."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if cluster_bus and (port > 55000 or not _port_free(port + 10000)):
            continue
        if _port_free(port):
            return port
    raise RuntimeError("no free TCP port found")


# ---------------------------------------------------------------- a minimal RESP client

class RedisError(Exception):
    pass


def _encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


def redis_command(port, *args, host="127.0.0.1", timeout=2.0):
    """One command to the server at host:port; its reply (bytes, int, str, list, None).
    An error reply raises RedisError; an unreachable server raises OSError."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(_encode(args))
        value = _Reader(s).reply()
    if isinstance(value, RedisError):
        raise value
    return value


def answers_ping(port, host="127.0.0.1"):
    try:
        return redis_command(port, "PING", host=host, timeout=0.5) == "PONG"
    except (OSError, RedisError):
        return False


def scan_keys(port, host="127.0.0.1"):
    """Every key on one server (SCAN, not KEYS: a cluster node answers for its own keys)."""
    keys, cursor = [], b"0"
    while True:
        cursor, batch = redis_command(port, "SCAN", cursor, "COUNT", 1000, host=host)
        keys.extend(batch)
        if cursor == b"0":
            return keys


def _poll(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------- one redis-server

class RedisServer:
    """redis-server in the foreground as a child of the test, on a free port (or the one
    given), no persistence, its files in workdir. stop() ends it by pid; start() again
    starts it on the same port (the backend coming back)."""

    def __init__(self, workdir, port=None, bind=("127.0.0.1",), extra=(), cluster=False):
        self.server, self.cli = require_tools("redis-server", "redis-cli")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fixed_port = port is not None
        self.port = port
        self.bind = tuple(bind)
        self.extra = tuple(extra)
        self.cluster = cluster
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def argv(self):
        argv = [self.server, "--port", str(self.port), "--bind", *self.bind,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.workdir), "--logfile", "", "--protected-mode", "no"]
        if self.cluster:
            argv += ["--cluster-enabled", "yes",
                     "--cluster-config-file", str(self.workdir / "nodes.conf"),
                     "--cluster-node-timeout", "5000"]
        return argv + list(self.extra)

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for attempt in range(5):
            if not self.fixed_port and (self.port is None or attempt > 0):
                self.port = free_port(cluster_bus=self.cluster)
            self.starts += 1
            log = open(self.workdir / f"redis-{self.starts}.log", "wb")
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
            log.close()
            deadline = time.monotonic() + START_DEADLINE_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # e.g. the port was taken meanwhile
                if answers_ping(self.port):
                    return self
                time.sleep(0.02)
            else:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING "
                                   f"within {START_DEADLINE_S}s: {self.log()[-2000:]}")
            if self.fixed_port:
                time.sleep(0.2)  # the old server's port may be in its last moment of use
        raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}")

    def log(self):
        try:
            return (self.workdir / f"redis-{self.starts}.log").read_text(errors="replace")
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGKILL):
        """Ends this server by pid (SIGKILL by default: the backend disappears at once)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_DEADLINE_S)
        # The port must be free again before a restart binds it.
        _poll(lambda: not answers_ping(self.port), STOP_DEADLINE_S, "redis to go away")

    def restart(self):
        """Starts the server again on the same port (empty: nothing was persisted)."""
        self.fixed_port = True
        return self.start()

    def command(self, *args, **kwargs):
        return redis_command(self.port, *args, **kwargs)


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path / "redis")
    r.start()
    try:
        yield r
    finally:
        r.stop()


# ---------------------------------------------------------------- a Redis Cluster

class RedisCluster:
    """Three masters, no replicas, made into a cluster by `redis-cli --cluster create`."""

    def __init__(self, workdir, masters=3):
        self.nodes = [RedisServer(Path(workdir) / f"node{i}", cluster=True)
                      for i in range(masters)]

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    @property
    def url(self):
        return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self):
        for n in self.nodes:
            n.start()
        argv = [self.nodes[0].cli, "--cluster", "create",
                *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas", "0", "--cluster-yes"]
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=CLUSTER_DEADLINE_S)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout!r} {out.stderr!r}")
        _poll(self.healthy, CLUSTER_DEADLINE_S, "cluster_state:ok on every node")
        return self

    def info(self, port):
        text = redis_command(port, "CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)

    def healthy(self):
        try:
            return all(self.info(p).get("cluster_state") == "ok"
                       and self.info(p).get("cluster_slots_assigned") == "16384"
                       and self.info(p).get("cluster_known_nodes") == str(len(self.nodes))
                       for p in self.ports)
        except (OSError, RedisError):
            return False

    def stop(self):
        for n in self.nodes:
            n.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    c = RedisCluster(tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()


# ---------------------------------------------------------------- daemons on a backend

class BackendMount(Mount):
    """Mount (conftest) of `ipcfs ... --backend URL MOUNTPOINT`, optionally started through
    a command prefix (nsenter into a network namespace). The prefix must exec ipcfs, so the
    child's pid stays the daemon's and stop() (SIGTERM, then SIGKILL) reaches it."""

    def __init__(self, tmp_path, url, options=(), args=(), prefix=()):
        self.path = tmp_path / "mnt"
        self.path.mkdir()
        self.log_path = tmp_path / "ipcfs.log"
        opts = ",".join(["auto_unmount", *options])
        self.argv = [*prefix, IPCFS_BIN, "-f", "-o", opts, "--log-level", "warn",
                     "--backend", url, *args, str(self.path)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.returncode = None
        deadline = time.monotonic() + MOUNT_DEADLINE_S
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"ipcfs exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("ipcfs did not mount within the deadline")
            time.sleep(0.01)

    def kill9(self):
        """SIGKILL the daemon (a crash: no cleanup) and lazily unmount what is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_DEADLINE_S)
        self.stop()


class Mounts:
    """Factory of BackendMounts under one directory; every one is stopped at teardown, and
    every one not killed on purpose must have exited cleanly."""

    def __init__(self, base):
        self.base = Path(base)
        self.made = []
        self.killed = set()

    def make(self, url, options=(), args=(), prefix=(), name=None):
        d = self.base / (name or f"m{len(self.made)}")
        d.mkdir(parents=True)
        m = BackendMount(d, url, options, args, prefix)
        self.made.append(m)
        return m

    def kill9(self, m):
        self.killed.add(id(m))
        m.kill9()

    def stop_all(self):
        for m in self.made:
            m.stop()

    def check(self):
        for m in self.made:
            if id(m) not in self.killed:
                check_clean_exit(m)


@pytest.fixture
def backend_mounts(tmp_path):
    ms = Mounts(tmp_path / "mounts")
    try:
        yield ms
    finally:
        ms.stop_all()
    ms.check()


class Pair:
    def __init__(self, redis, a, b):
        self.redis, self.a, self.b = redis, a, b


@pytest.fixture
def two_mounts(redis_server, backend_mounts):
    """One redis-server and two daemons (A and B) on it, on two mountpoints, with a short
    claim lease (1.5 s) and backend timeout (1 s)."""
    opts = ("backend_lease=1500", "backend_timeout=1000")
    a = backend_mounts.make(redis_server.url, opts, name="a")
    b = backend_mounts.make(redis_server.url, opts, name="b")
    return Pair(redis_server, a, b)


# ---------------------------------------------------------------- network namespaces

def _run(argv, timeout=30.0, check=True):
    out = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{argv} failed ({out.returncode}): {out.stderr.decode(errors='replace')}")
    return out


class Namespaces:
    """Network namespaces made by the test, each linked to the root namespace by its own
    veth pair with its own /30: the root side is .1 (Redis binds it), the namespace side .2.
    Names carry the test process's pid; teardown deletes the namespaces (which deletes their
    veth ends and so the pairs) and any root-side end still there."""

    def __init__(self, count=2):
        self.ip, self.nsenter = require_tools("ip", "nsenter")
        self.tag = f"ipcfs{os.getpid() % 100000}"
        self.names = [f"{self.tag}n{i}" for i in range(count)]
        self.root_ifs = [f"{self.tag}r{i}" for i in range(count)]  # <= 15 characters
        self.peer_ifs = [f"{self.tag}p{i}" for i in range(count)]
        self.root_addrs = []
        self.ns_addrs = []
        self.made_ns = []
        self.made_if = []

    def _subnets(self, count):
        """count /30 subnets of 10.213.0.0/16 that no interface of this machine uses (the
        pid picks where to start, so parallel runs look in different places)."""
        used = _run([self.ip, "-o", "-4", "addr", "show"]).stdout.decode()
        found = []
        start = (os.getpid() * 4) % 65536
        for k in range(16384):
            n = (start + 4 * k) % 65536
            root, peer = (f"10.213.{n >> 8}.{(n & 255) + d}" for d in (1, 2))
            if f" {root}/" not in used and f" {peer}/" not in used:
                found.append((root, peer))
                if len(found) == count:
                    return found
        raise RuntimeError("no unused /30 subnet for the veth pairs")

    def create(self):
        for ns in self.names:
            _run([self.ip, "netns", "del", ns], check=False)  # a leftover of this pid
        for (root_addr, ns_addr), ns, rif, pif in zip(self._subnets(len(self.names)),
                                                      self.names, self.root_ifs, self.peer_ifs):
            _run([self.ip, "netns", "add", ns])
            self.made_ns.append(ns)
            _run([self.ip, "link", "add", rif, "type", "veth", "peer", "name", pif])
            self.made_if.append(rif)
            _run([self.ip, "link", "set", pif, "netns", ns])
            _run([self.ip, "addr", "add", f"{root_addr}/30", "dev", rif])
            _run([self.ip, "link", "set", rif, "up"])
            _run([self.ip, "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", pif])
            _run([self.ip, "-n", ns, "link", "set", pif, "up"])
            _run([self.ip, "-n", ns, "link", "set", "lo", "up"])
            self.root_addrs.append(root_addr)
            self.ns_addrs.append(ns_addr)
        return self

    def prefix(self, i):
        """Runs a command in namespace i's network but in the test's mount namespace (so a
        FUSE mount made there is the test's to use). `ip netns exec` would not do: it
        enters a private mount namespace, where the mount would stay invisible."""
        return [self.nsenter, f"--net=/run/netns/{self.names[i]}", "--"]

    def run_in(self, i, argv, timeout=30.0, check=True):
        return _run([*self.prefix(i), *argv], timeout=timeout, check=check)

    def delete(self):
        for ns in self.made_ns:
            _run([self.ip, "netns", "del", ns], check=False)
        for rif in self.made_if:
            if _run([self.ip, "link", "show", rif], check=False).returncode == 0:
                _run([self.ip, "link", "del", rif], check=False)
        self.made_ns, self.made_if = [], []


@pytest.fixture
def namespaces():
    ns = Namespaces(2)
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


# ---------------------------------------------------------------- steps across mounts

STEP_S = 5.0  # one step that should take milliseconds
# A backend operation that cannot complete must fail within backend_timeout (1 s in these
# tests) plus this much slack.
EIO_DEADLINE_S = 5.0


class Step:
    """fn() in a daemon thread, started at once (a faulty daemon may leave a syscall
    hanging; killing the daemon at teardown frees it). finish(timeout) fails the test if
    fn is still running then, and returns ("ok", value) or ("err", errno)."""

    def __init__(self, fn, what="step"):
        self.what = what
        self.outcome = None
        self.started = time.monotonic()
        self.ended = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.outcome = ("ok", fn())
        except OSError as e:
            self.outcome = ("err", e.errno)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.outcome = ("raised", repr(e))
        self.ended = time.monotonic()

    def running(self):
        return self.thread.is_alive()

    def assert_blocked(self, for_s=0.3):
        """Still running after for_s seconds (a negative check: nothing waits on it)."""
        self.thread.join(for_s)
        assert self.thread.is_alive(), f"{self.what} did not block: {self.outcome}"

    def finish(self, timeout=STEP_S):
        self.thread.join(timeout)
        if self.thread.is_alive():
            pytest.fail(f"{self.what}: still blocked after {timeout}s")
        assert self.outcome[0] != "raised", f"{self.what} raised {self.outcome[1]}"
        return self.outcome

    def value(self, timeout=STEP_S):
        kind, value = self.finish(timeout)
        if kind == "err":
            raise OSError(value, f"{self.what}: {os.strerror(value)}")
        return value

    def elapsed(self):
        return self.ended - self.started


def errno_within(fn, timeout, what):
    """Runs fn with a deadline; returns (errno or None, seconds taken)."""
    s = Step(fn, what)
    kind, value = s.finish(timeout)
    return (value if kind == "err" else None), s.elapsed()


def read_whole_message(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def receive_one(box, flags=os.O_RDONLY):
    """open .receive, take one message to its end, close (blocking unless flags say not)."""
    fd = os.open(Path(box, ".receive"), flags)
    try:
        return read_whole_message(fd)
    finally:
        os.close(fd)


def start_receive(box, what="receive"):
    """A blocking receive of one message in a thread (Step)."""
    return Step(lambda: receive_one(box), what)


def check_local_objects(m):
    """pipes/, shm/ and procs/ of mount m work (they never touch the backend)."""
    pipe = m / "pipes" / f"p{time.monotonic_ns()}"
    one = os.open(pipe, os.O_RDWR | os.O_CREAT, 0o600)
    two = os.open(pipe, os.O_RDWR)
    try:
        assert os.write(one, b"over the pipe") == 13
        assert os.read(two, 100) == b"over the pipe"
    finally:
        os.close(one)
        os.close(two)
    os.unlink(pipe)
    seg = m / "shm" / f"s{time.monotonic_ns()}"
    fd = os.open(seg, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 4096)
        assert os.pwrite(fd, b"shared", 100) == 6
        assert os.pread(fd, 6, 100) == b"shared"
    finally:
        os.close(fd)
    os.unlink(seg)
    inbox = m / "procs" / str(os.getpid())
    fd = os.open(inbox / ".send", os.O_WRONLY)
    try:
        os.write(fd, b"to myself")
    finally:
        os.close(fd)
    assert receive_one(inbox, os.O_RDONLY | os.O_NONBLOCK) == b"to myself"
