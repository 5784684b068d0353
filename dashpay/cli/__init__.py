"""The `dashpay` command line (cli/app.py builds it; cli/fast.py runs a daemon command
without it when it can)."""


def main() -> None:
    """The console script's entry point, kept at ``dashpay.cli:main`` so an installed
    script keeps working whichever module builds the app."""
    import sys

    from dashpay.cli.fast import run

    code = run(sys.argv[1:])
    if code is not None:
        raise SystemExit(code)
    from dashpay.cli.app import main as full

    full()
