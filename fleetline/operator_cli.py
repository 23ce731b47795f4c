"""Operator subcommands (filled in with the gateway issue)."""


def add_parsers(sub) -> None:
    return None
