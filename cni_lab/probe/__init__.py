"""The connectivity matrix: every ordered pair of endpoints (pods and nodes) probed for real."""
