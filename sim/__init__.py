"""Deterministic simulator: real Raft nodes on a virtual clock over a simulated network and disk."""
