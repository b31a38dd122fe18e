"""One module per `xalign` subcommand; each has `register(subparsers)` and calls one capability."""
