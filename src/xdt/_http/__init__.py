"""HTTP as the platform speaks it: errors as answers and back (:mod:`.server`), and the
keep-alive client of the platform's own hops (:mod:`.client`)."""
