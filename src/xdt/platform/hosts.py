"""Test hosts: the embedded platform spread over network namespaces on one machine.

With ``platform.hosts: N`` the platform makes N hosts before anything starts: each a Linux
network namespace with one veth link to a bridge in the machine's own namespace, addressed
from the benchmarking range 198.18.0.0/15 (RFC 2544: never routed anywhere). One /24 per
platform::

    machine (root namespace)        bridge xdtb<K>  198.18.K'.254  the gateway, the stores
      ├─ veth xdtv<K>h1 ── eth0 in netns xdt-<K>-h1   198.18.K'.1   sidecars + functions
      ├─ veth xdtv<K>h2 ── eth0 in netns xdt-<K>-h2   198.18.K'.2
      └─ veth xdtv<K>s  ── eth0 in netns xdt-<K>-store 198.18.K'.200 (platform.store_host)

Instances are placed on hosts (:meth:`HostNetwork.place`); a sidecar and its function run in
their host's namespace, so the sidecar's object server and ingress bind the host's address,
references carry it, and a pull between hosts crosses two veth links and the bridge. The
same-host fast path (memfds over a Unix socket) is per host: each host has its own folder of
object sockets, so a receiver finds its source's socket only when both share a host.

``platform.link`` shapes every link with ``tc netem`` (rate and delay) at both of its ends,
so each direction of each host's link runs at the rate: a cluster-like network.

Who owns what, and cleanup: the platform claims its /24 by creating a state file (O_EXCL)
in ``/run/xdt/hosts`` that names its pid and start time, before it creates anything. Every
name derives from the /24's index K, so a platform killed without the chance to stop
(SIGKILL) is cleaned at the next start of any platform: its namespaces (their veths go with
them) and its bridge are removed and its claim released. Processes in the namespaces die
with the platform (parent-death signal).

Needs root (CAP_NET_ADMIN) and ``ip`` (iproute2); ``tc`` for ``link``. Without them the
platform does not start and :class:`~xdt.HostsError` says what is missing.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._core.errors import HostsError
from .._util.procfs import owner_record, runs
from .status import HostsStatus

__all__ = [
    "Host",
    "HostNetwork",
    "Link",
    "enter",
    "format_rate",
    "inside",
    "namespace_of",
    "remove_stale_hosts",
    "veth_of",
]

RANGE = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544's benchmarking range, 512 /24s
STATE_DIR = Path("/run/xdt/hosts")
MAX_HOSTS = 100  # addresses .1-.100; the store host is .200, the machine .254
STORE_HOST_NUMBER = 200
MACHINE_NUMBER = 254
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Link:
    """How every host's link is shaped: ``rate`` in bits per second, ``delay`` in seconds
    (one way, per end). None: unshaped."""

    rate: int | None = None
    delay: float | None = None

    def shape(self, device: str, netns: str | None = None) -> None:
        """Shape the egress of ``device`` (in ``netns``): an HTB class at the rate, and
        ``netem`` under it for the delay. Blocking."""
        tc = ["tc", *(["-n", netns] if netns else [])]
        parent = ["root"]
        if self.rate:
            # Bursts of 1 ms at the rate: HTB's tokens refill on timers, and a smaller bucket
            # leaves a fast link well under its rate.
            burst = str(max(self.rate // 8 // 1000, 64 << 10))
            _run([*tc, "qdisc", "add", "dev", device, "root", "handle", "1:", "htb",
                  "default", "1"])  # fmt: skip
            _run([*tc, "class", "add", "dev", device, "parent", "1:", "classid", "1:1", "htb",
                  "rate", f"{self.rate}bit", "ceil", f"{self.rate}bit",
                  "burst", burst, "cburst", burst])  # fmt: skip
            parent = ["parent", "1:1"]
        if self.delay:
            try:
                _run([*tc, "qdisc", "add", "dev", device, *parent, "netem",
                      "delay", f"{self.delay * 1e6:.0f}us", "limit", "100000"])  # fmt: skip
            except HostsError as exc:
                if "unknown" not in str(exc):
                    raise
                raise HostsError(
                    "platform.link's delay needs the kernel's netem queueing discipline "
                    "(sch_netem), which this kernel lacks: leave the delay out (a rate works "
                    "without netem)"
                ) from None

    def as_text(self) -> str:
        """As ``--link`` takes it: ``10gbit``, ``10gbit,0.1ms``."""
        rate = ""
        if self.rate:
            units = ((10**9, "gbit"), (10**6, "mbit"), (10**3, "kbit"), (1, "bit"))
            scale, unit = next((n, u) for n, u in units if self.rate % n == 0)
            rate = f"{self.rate // scale}{unit}"
        return rate + (f",{self.delay * 1e3:g}ms" if self.delay else "")

    def describe(self) -> str:
        parts = []
        if self.rate:
            parts.append(format_rate(self.rate))
        if self.delay:
            parts.append(f"{self.delay * 1e3:g} ms delay")
        return ", ".join(parts) or "unshaped"


@dataclass(frozen=True)
class Host:
    """One test host: its name in the spec and in ``xdt status`` (``h1``…, ``store``), its
    network namespace and its address."""

    name: str
    netns: str
    address: str
    veth: str  # the machine's end of its link

    def enter(self) -> Callable[[], None]:
        """A ``preexec_fn`` step that moves the child into this host's namespace."""
        return functools.partial(enter, self.netns)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def enter(netns: str) -> None:
    """Move the calling process (a child between fork and exec) into ``netns``. Must run
    while the child still has CAP_SYS_ADMIN, i.e. before it drops to a function's uid."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, f"into {netns}")
    finally:
        os.close(fd)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns {what}: {os.strerror(code)}")


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the calling *thread* in ``netns`` for the block: sockets it makes meanwhile are the
    host's (a benchmark's consumer on a host). Back in its own namespace afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(netns)
        try:
            yield
        finally:
            _setns(own, f"back from {netns}")
    finally:
        os.close(own)


@dataclass
class HostNetwork:
    """The test hosts of one platform. ``start()`` makes them; ``close()`` removes them."""

    count: int
    store_host: bool = False
    link: Link | None = None
    hosts: list[Host] = field(default_factory=list)
    store: Host | None = None
    index: int | None = None  # K: which /24 of the range, and every name
    # (function, host name) -> its instances there now
    _placed: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    @property
    def network(self) -> ipaddress.IPv4Network:
        assert self.index is not None
        base = int(RANGE.network_address) + (self.index << 8)
        return ipaddress.IPv4Network((base, 24))

    @property
    def machine_address(self) -> str:
        """The machine's own address on the hosts' network (the bridge's): where the
        gateway and the embedded stores are reached from the hosts."""
        return str(self.network.network_address + MACHINE_NUMBER)

    @property
    def bridge(self) -> str:
        assert self.index is not None
        return _bridge_name(self.index)

    def host(self, number: int) -> Host:
        """Host ``number`` (1-based, as in the spec's ``host:``)."""
        return self.hosts[number - 1]

    # -- placement ---------------------------------------------------------------------------

    def place(self, function: str, allowed: Iterable[int] = ()) -> Host:
        """Where a new instance of ``function`` goes, among ``allowed`` hosts (all when
        empty): the one with the fewest of its instances, then the fewest of all, then the
        lowest-numbered — a function's instances spread, as Kubernetes spreads a
        deployment's pods."""
        numbers = list(allowed) or list(range(1, len(self.hosts) + 1))
        everyone: collections.Counter[str] = collections.Counter()
        for (_, name), count in self._placed.items():
            everyone[name] += count

        def load(number: int) -> tuple[int, int, int]:
            name = self.host(number).name
            return self._placed[function, name], everyone[name], number

        chosen = min(numbers, key=load)
        host = self.host(chosen)
        self._placed[function, host.name] += 1
        return host

    def leave(self, function: str, host: Host) -> None:
        """An instance of ``function`` placed on ``host`` has stopped."""
        self._placed[function, host.name] = max(0, self._placed[function, host.name] - 1)

    # -- making and removing -----------------------------------------------------------------

    def start(self) -> None:
        """Claim a /24, then make the bridge, the namespaces and their links (blocking: run
        it off the event loop). Anything half-made is removed before the error is raised."""
        _require_tools(shaped=self.link is not None)
        if not 1 <= self.count <= MAX_HOSTS:
            raise HostsError(f"platform.hosts must be 1 to {MAX_HOSTS}, not {self.count}")
        with _claims_locked():
            remove_stale_hosts()
            self.index = _claim()
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        index = self.index
        assert index is not None
        net = self.network
        prefix = net.prefixlen
        _ip("link", "add", self.bridge, "type", "bridge")
        _no_ipv6(self.bridge)
        _ip("addr", "add", f"{self.machine_address}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        numbered = [(f"h{n}", n) for n in range(1, self.count + 1)]
        if self.store_host:
            numbered.append(("store", STORE_HOST_NUMBER))
        for name, number in numbered:
            address = str(net.network_address + number)
            host = Host(name, _netns_name(index, name), address, _veth_name(index, name))
            _ip("netns", "add", host.netns)
            # IPv4 only: IPv6 link-local addresses would reach past the hosts' /24 (to the
            # machine's own [::] listeners, unchecked by the gateway's test of the /24).
            ipv6_off = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            _run(["ip", "netns", "exec", host.netns, "sysctl", "-q", "-e", "-w", *ipv6_off])
            if name == "store":
                self.store = host
            else:
                self.hosts.append(host)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns)  # fmt: skip
            _no_ipv6(host.veth)
            _ip("link", "set", host.veth, "master", self.bridge, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            if self.link is not None:
                self.link.shape(host.veth)  # towards the host
                self.link.shape("eth0", host.netns)  # from it

    def close(self) -> None:
        """Remove everything this network made and release its claim (blocking)."""
        if self.index is None:
            return
        with _claims_locked():
            _remove(self.index)
        self.index = None
        self.hosts.clear()
        self.store = None

    def describe(self, gateway: str) -> HostsStatus:
        """For ``xdt status``: the hosts, their addresses, the link; ``gateway`` is the URL
        the hosts reach the gateway at."""
        return {
            "network": str(self.network),
            "machine": self.machine_address,
            "gateway": gateway,
            "hosts": {h.name: h.address for h in self.hosts}
            | ({"store": self.store.address} if self.store else {}),
            "link": (self.link or Link()).describe(),
        }


def _bridge_name(index: int) -> str:
    return f"xdtb{index}"


def _netns_name(index: int, host: str) -> str:
    return f"xdt-{index}-{host}"


def _veth_name(index: int, host: str) -> str:
    # Interface names have at most 15 characters: "store" is "s".
    return f"xdtv{index}{'s' if host == 'store' else host}"


def namespace_of(status: HostsStatus, name: str) -> str:
    """The network namespace of host ``name`` ("h1", "store") of a running platform, from
    its ``/status``: for tools run beside it (``ip netns exec``, iperf3)."""
    return _netns_name(_index_of(status), name)


def veth_of(status: HostsStatus, name: str) -> str:
    """The machine's end of host ``name``'s link: its counters say what the host sent (rx)
    and received (tx)."""
    return _veth_name(_index_of(status), name)


def _index_of(status: HostsStatus) -> int:
    network = ipaddress.IPv4Network(status["network"])
    return (int(network.network_address) - int(RANGE.network_address)) >> 8


def format_rate(bits_per_second: float) -> str:
    """``10 Gbit/s``, ``250 Mbit/s``."""
    if bits_per_second >= 1e9:
        return f"{bits_per_second / 1e9:.3g} Gbit/s"
    return f"{bits_per_second / 1e6:.3g} Mbit/s"


# -- the machine's side -------------------------------------------------------------------------


def _require_tools(*, shaped: bool) -> None:
    if os.geteuid() != 0:
        raise HostsError(
            "platform.hosts makes network namespaces, which needs root (CAP_NET_ADMIN): run "
            "xdt up as root, or leave platform.hosts out to run every instance on this host"
        )
    for tool, why in (("ip", "iproute2"), *((("tc", "iproute2's tc"),) if shaped else ())):
        if shutil.which(tool) is None:
            raise HostsError(f"platform.hosts needs {tool} ({why}): apt-get install iproute2")


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=_IP_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or exc.stdout or "").strip()
        raise HostsError(f"{' '.join(argv)} failed: {said}") from None
    except subprocess.TimeoutExpired:
        raise HostsError(f"{' '.join(argv)} did not finish in {_IP_TIMEOUT:g} s") from None


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _no_ipv6(device: str) -> None:
    """No IPv6 on the machine's end of a link (nor a link-local address to reach it by)."""
    with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
        Path(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6").write_text("1")


def _claim() -> int:
    """The index of a /24 of the range that no platform holds and no address on this
    machine is in, claimed by creating its state file (under the claims' lock)."""
    used = _networks_in_use()
    for index in range(RANGE.num_addresses >> 8):
        base = int(RANGE.network_address) + (index << 8)
        if ipaddress.IPv4Network((base, 24)) in used:
            continue
        try:
            fd = os.open(STATE_DIR / f"{index}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as state:
            json.dump(owner_record(), state)
        return index
    raise HostsError("every /24 of 198.18.0.0/15 is in use: stop other platforms with hosts")


def _networks_in_use() -> set[ipaddress.IPv4Network]:
    """The /24s of the range that addresses on this machine's own namespace fall in."""
    # "2: eth0    inet 10.0.0.7/24 brd …": the fourth word
    found = _listed(["ip", "-4", "-o", "addr", "show"], lambda line: line.split()[3])
    addresses = [ipaddress.IPv4Interface(text).ip for text in found]
    return {ipaddress.IPv4Network((int(a) >> 8 << 8, 24)) for a in addresses if a in RANGE}


def _remove(index: int) -> None:
    """Remove the links, namespaces and bridge of /24 ``index``, then its claim. What is
    already gone is no error. The veths go first, by name: one a namespace takes with it goes
    only later, on the kernel's own time, and would still be listed."""
    links = _listed(["ip", "-o", "link", "show"], lambda line: line.split(":")[1].split("@")[0])
    namespaces = _listed(["ip", "netns", "list"], lambda line: line.split()[0])
    ours = re.compile(rf"xdtv{index}(h\d+|s)")
    for name in filter(ours.fullmatch, links):
        with contextlib.suppress(HostsError):
            _ip("link", "del", name)
    for name in namespaces:
        if name.startswith(_netns_name(index, "")):
            with contextlib.suppress(HostsError):
                _ip("netns", "del", name)
    if _bridge_name(index) in links:
        with contextlib.suppress(HostsError):
            _ip("link", "del", _bridge_name(index))
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{index}.json").unlink()


def _listed(argv: list[str], name_of: Callable[[str], str]) -> list[str]:
    output = subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT).stdout
    return [name_of(line).strip() for line in output.splitlines() if line.strip()]


@contextlib.contextmanager
def _claims_locked() -> Iterator[None]:
    """Hold the claims' lock: one platform at a time judges claims stale, removes and makes
    them — two starting at once would otherwise both clean one stale claim, and the slower
    remove what the faster had just claimed again."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def remove_stale_hosts() -> list[int]:
    """Remove what platforms killed without a chance to stop left behind: every claim whose
    platform process is gone (its pid runs no more, or runs a later process), or that holds
    no owner at all (killed between making its file and writing it: claims are written
    under the lock this is called under). The /24 indexes cleaned."""
    if not STATE_DIR.is_dir():
        return []
    cleaned = []
    for state in STATE_DIR.glob("*.json"):
        try:
            index = int(state.stem)
        except ValueError:
            continue  # not a claim
        try:
            owner = json.loads(state.read_text())
        except ValueError:
            owner = None  # unreadable: no owner
        except OSError:
            continue
        if not runs(owner):
            _remove(index)
            cleaned.append(index)
    return cleaned
