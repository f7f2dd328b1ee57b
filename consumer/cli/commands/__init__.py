"""One module per command group (and per top-level command family): each parses its
arguments, calls the operation below the CLI (``consumer.operations``, ``store``) and
renders the result. A new command goes in the module of its group."""
