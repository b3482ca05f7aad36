"""Cluster-mode tests: a real two-node Slurm test cluster on this machine (issue 18)."""
