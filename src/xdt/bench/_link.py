"""What a test host's link carries with a tool that is not xdt: iperf3, one TCP stream, over
the same veths and bridge a cross-host pull uses — the baseline a pull's rate is read against."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import time

from ..platform.hosts import format_rate, namespace_of, veth_of
from ..platform.status import HostsStatus
from ._memory import Sampler

__all__ = ["LinkSampler", "iperf3_rate"]

SECONDS = 3
WINDOW = 0.1  # the peak rate is over any 100 ms: long enough to hold many packets' worth


class LinkSampler(Sampler):
    """The peak rate at which host ``name`` received over its link (bits per second, over
    any :data:`WINDOW`; over the whole case when it was shorter), from the machine's end's
    byte counter, sampled every 10 ms."""

    def __init__(self, hosts: HostsStatus, name: str, interval: float = 0.01) -> None:
        super().__init__(interval)
        self._counter = f"/sys/class/net/{veth_of(hosts, name)}/statistics/tx_bytes"
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._first: tuple[float, int] | None = None
        self.peak_bits = 0.0

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self.sample()  # the case's last bytes
        if not self.peak_bits and self._first is not None and self._samples:
            (began, before), (ended, after) = self._first, self._samples[-1]
            if ended > began:
                self.peak_bits = (after - before) * 8 / (ended - began)

    def sample(self) -> None:
        with open(self._counter) as counter:
            now, sent = time.monotonic(), int(counter.read())
        self._samples.append((now, sent))
        if self._first is None:
            self._first = (now, sent)
        while len(self._samples) > 1 and now - self._samples[1][0] >= WINDOW:
            self._samples.popleft()  # keep the newest sample at least a window old
        then, before = self._samples[0]
        if now - then >= WINDOW:
            self.peak_bits = max(self.peak_bits, (sent - before) * 8 / (now - then))


def iperf3_rate(hosts: HostsStatus, sender: str = "h1", receiver: str = "h2") -> str:
    """iperf3's rate from ``sender`` to ``receiver`` ("9.41 Gbit/s"), or why there is none."""
    if shutil.which("iperf3") is None:
        return "not measured: iperf3 is not installed (apt-get install iperf3)"
    address = hosts["hosts"][receiver]
    server = subprocess.Popen(
        ["ip", "netns", "exec", namespace_of(hosts, receiver),
         "iperf3", "--server", "--one-off", "--bind", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):  # until it listens: a refused client exits at once
            time.sleep(0.1)
            client = subprocess.run(
                ["ip", "netns", "exec", namespace_of(hosts, sender),
                 "iperf3", "--client", address, "--time", str(SECONDS), "--json"],
                capture_output=True, text=True, timeout=SECONDS + 30,
            )  # fmt: skip
            if client.returncode == 0:
                bits = json.loads(client.stdout)["end"]["sum_received"]["bits_per_second"]
                return format_rate(bits)
        return f"not measured: iperf3 failed ({client.stderr.strip() or client.stdout[-200:]})"
    finally:
        server.kill()
        server.wait()
