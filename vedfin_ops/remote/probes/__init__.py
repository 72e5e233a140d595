"""Facts about the host: each probe's shell command beside the parser of its answer (as
pyinfra's facts are), so a probe's output format is known in one file."""
