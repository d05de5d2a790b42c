"""What a process reads, writes and is told, beneath the engine and the runs: run folders and
the one atomic writer (folders), stop requests by signal (signals), one-line errors (errors)."""
