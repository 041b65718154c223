"""How long `gateway ... --help` takes to start, and how much memory it uses: this tree against another revision.

    .venv/bin/python bench/cli_start.py                 # this tree only
    .venv/bin/python bench/cli_start.py --before 05666d1 --rounds 3

With ``--before REV`` the revision is checked out into a temporary git worktree, and both trees run in the same
interpreter, alternated (A B A B ...), so that machine drift hits both alike. Each run is a fresh process; wall
time and peak RSS come from ``/usr/bin/time``. It also prints how many modules ``build_parser()`` loads and which
heavy libraries among them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("--help", "central --help", "server --help", "log --help", "token --help")
HEAVY = ("sqlalchemy", "alembic", "aiohttp", "cryptography", "structlog", "asyncpg", "aiosqlite")

# Run the CLI of `tree`, not of the installed (editable) package: drop the editable finder, put the tree first.
PRELUDE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
sys.path.insert(0, {tree!r})
"""


def run_once(tree: Path, command: str) -> tuple[float, int]:
    code = PRELUDE.format(tree=str(tree)) + f"sys.argv = ['gateway', *{command.split()!r}]\n" + (
        "from gateway.cli import main\nmain()\n"
    )
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", out.name, sys.executable, "-c", code],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seconds, kib = out.read().split()
    return float(seconds), int(kib) // 1024


def modules(tree: Path) -> tuple[int, list[str]]:
    code = PRELUDE.format(tree=str(tree)) + (
        "import gateway.cli\ngateway.cli.build_parser()\n"
        f"print(len(sys.modules), *sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to compare with (checked out in a temporary worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            old = Path(tmp) / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.before],
                           check=True)
            trees = {args.before: old, "this tree": ROOT}
        try:
            for name, tree in trees.items():
                count, heavy = modules(tree)
                print(f"{name}: build_parser() loads {count} modules; heavy: {', '.join(heavy) or 'none'}")
            for round_ in range(1, args.rounds + 1):
                for name, tree in trees.items():
                    for command in COMMANDS:
                        seconds, mib = run_once(tree, command)
                        print(f"round {round_}  {name:>10}  gateway {command:<16} {seconds:5.2f} s  {mib:4d} MiB")
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "before")],
                               check=False)


if __name__ == "__main__":
    main()
