"""VID, video analytics: streaming → decoder → recognition fan-out, as in vSwarm's
video-analytics (see :mod:`.functions`; set-up and checking in :mod:`.app`)."""
