"""Exit statuses every LangBRT command shares, so scripts can tell a bad flag from a Ctrl-C."""

EXIT_USAGE = 2  # a bad flag or input, reported in one line
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, the shell's convention
