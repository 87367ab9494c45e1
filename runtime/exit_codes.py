"""The engine process's exit codes: 0 only once the control plane has acknowledged a terminal
state of the run (a signal adds 128 + its number)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # unusable settings, e.g. no readable run credential
