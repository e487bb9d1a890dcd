"""The transfer core: what every other layer of xdt stands on, and which imports none of them.

- :mod:`.errors` — every exception xdt raises, with its wire code;
- :mod:`.refs` — sealed references and the key ring (the capability);
- :mod:`.checksum` — the XXH3 transfer checksum;
- :mod:`.buffers` — memfd-backed buffers and the warm pool; :mod:`.loans` — mappings of
  memfds that peers lend us;
- :mod:`.store` — the object store a sidecar keeps (quota, pull budget, expiry, drain);
- :mod:`.fdio` — socket primitives the event loop lacks (fd passing);
- :mod:`.peercred` — who is at the other end of a Unix socket.

It may use :mod:`xdt._util` (leaf helpers with no xdt imports); nothing here imports the pull
protocol, the sidecar, the platform or any HTTP code.
"""
