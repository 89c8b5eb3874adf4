"""`python -m engine tune ...`: prepare, train, eval, use. Imports stay light until a command runs."""

from __future__ import annotations

import argparse


def add_parsers(tune: argparse.ArgumentParser, common: argparse.ArgumentParser, parser_class) -> None:
    """The `tune` sub-commands, added under the `tune` parser of `python -m engine`."""
    tune.add_subparsers(dest="action", required=True, parser_class=parser_class)


def run(args, settings) -> dict:
    """Run one `tune` action; returns the JSON the CLI prints (errors raise BadInput / EngineError)."""
    raise NotImplementedError(args.action)
