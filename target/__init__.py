"""Target-node agent and iSCSI portal (not built yet: see issue 5)."""
