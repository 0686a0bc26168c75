"""Exit statuses every LangBRT command shares, so scripts can tell a bad flag from a full disk or a Ctrl-C."""

EXIT_USAGE = 2  # a bad flag or input, reported in one line
# The command was right, but its output could not be written (a full disk, an I/O error): make room and run it
# again (langbrt-train: --resume), rather than change a flag. Output paths are checked before any work (exit 2).
EXIT_OUTPUT_NOT_WRITTEN = 4
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, the shell's convention
