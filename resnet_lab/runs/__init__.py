"""The runs: settings (flags -> preset -> overrides -> checks), sweeps of cells and their
store, shards, worker processes, the progress bar, step costs, results read back, the
command line's one-line errors."""
