"""`fleetline up`: the whole fleet on one machine (filled in with the gateway issue)."""

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("up", help="run the fleet locally on an embedded PostgreSQL")
    p.set_defaults(func=lambda args: 1)


__all__ = ["add_parser", "argparse"]
