"""What the commands do, below the command line: each operation that reads or changes the
store (and Redis where it must), callable and testable without the CLI.

The CLI (``consumer.cli``) parses arguments, calls one of these and renders the result;
``consumer.devtools`` calls them too. Nothing here parses flags or prints.
"""
