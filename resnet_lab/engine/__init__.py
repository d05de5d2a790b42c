"""The training engine: the loop (training), the learning-rate schedule (schedule), the data
(data) and whether the largest net fits (memory). It knows the networks, not the runs."""
