"""probes.kernels: the backends that compute the probe's raw sums."""
