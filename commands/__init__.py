"""The `espresso` command line: the only code that reads argv and the environment.

Each subcommand has a module here declaring its settings (commands/settings.py) and turning
them into the typed configuration of `flows/` and `connectors/`, which read neither.
"""
