"""`lift-local` (and `python -m lift_local`): the command line, in a process that has what makes torch and
vLLM fast on a CPU loaded before anything else (`cpu_engine.relaunch_preloaded`)."""

import sys


def main() -> None:
    from .cpu_engine import relaunch_preloaded

    relaunch_preloaded(["-m", "lift_local", *sys.argv[1:]])
    from .cli import main as cli

    cli(prog_name="lift-local")


if __name__ == "__main__":
    main()
