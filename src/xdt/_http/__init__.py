"""HTTP as the platform speaks it: its headers (:mod:`.headers`), errors as answers and back
(:mod:`.errors`, no aiohttp), aiohttp server helpers (:mod:`.server`) and the keep-alive
client of the platform's own hops (:mod:`.client`)."""
