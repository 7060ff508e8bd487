"""CLI helpers shared by the parts."""

from __future__ import annotations

from typer.core import TyperGroup


class RunByDefault(TyperGroup):
    """A command group where `aigclab PART ARGS...` means `aigclab PART run ARGS...` unless ARGS names a command."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)
