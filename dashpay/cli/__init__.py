"""The `dashpay` command line (cli/app.py builds it)."""


def main() -> None:
    """The console script's entry point, kept at ``dashpay.cli:main`` so an installed
    script keeps working whichever module builds the app."""
    from dashpay.cli.app import main as run

    run()
