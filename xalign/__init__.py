"""The user's layer: the `xalign` command line, its subcommands, `xalign demo` and `xalign doctor`.

Nothing below this package imports it (enforced by the import-linter contracts in pyproject.toml).
"""
