"""SET, stacking-ensemble training: driver → 4 trainers → reducer → meta-trainer, as in
vSwarm's stacking-training (see :mod:`.functions`; set-up and checking in :mod:`.app`)."""
