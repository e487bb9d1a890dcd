"""MR, MapReduce: a driver, 8 mappers and 2 reducers with a real shuffle, as in vSwarm's
map-reduce (see :mod:`.functions`; set-up and checking in :mod:`.app`)."""
