"""The web dashboard the manager serves: its sessions, its snapshot of the cluster, its page."""
