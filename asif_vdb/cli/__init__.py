"""The ``asif`` command: each command parses options and calls the Python client; errors print, not trace.

Every command module registers here, in ``COMMANDS``: the one list of what ``asif`` offers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from asif_vdb.cli.anchors import anchors
from asif_vdb.cli.backup import backup, restore
from asif_vdb.cli.common import EXIT_CODES, EXIT_INPUT, one_line
from asif_vdb.cli.demo import demo
from asif_vdb.cli.eval import eval_group
from asif_vdb.cli.explain import calibrate, explain
from asif_vdb.cli.index import index_group
from asif_vdb.cli.ingest import ingest
from asif_vdb.cli.labels import classify, labels
from asif_vdb.cli.maintenance import doctor, info, prune
from asif_vdb.cli.methods import methods
from asif_vdb.cli.search import gallery, search
from asif_vdb.cli.serve import serve
from asif_vdb.cli.tune import tune

COMMANDS: list[click.Command] = [
    demo, ingest, anchors, labels, classify, gallery, search, explain, calibrate, eval_group, methods, index_group,
    tune, info, doctor, prune, serve, backup, restore,
]


class AsifGroup(click.Group):
    """The ``asif`` group: a usage error (a missing option, a value out of range) is one line on stderr
    and exit code 2, like every other input error."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            where = f" (see `{e.ctx.command_path} --help`)" if isinstance(e, click.UsageError) and e.ctx else ""
            click.echo(f"error: {one_line(e.format_message())}{where}", err=True)
            sys.exit(EXIT_INPUT if isinstance(e, click.UsageError) else e.exit_code)


@click.group(cls=AsifGroup, epilog=EXIT_CODES)
@click.version_option(package_name="asif-vdb")
def main() -> None:
    """asif: zero-shot image classification and search from two frozen encoders + anchor pairs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


for _command in COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
