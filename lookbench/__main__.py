"""The ``lookbench`` command (console script and ``python -m lookbench``): the Typer app of
``lookbench.cli``, behind a guard that makes a Ctrl-C while it is still importing (typer,
rich: a few hundred milliseconds on a busy machine) one line and 130, as anywhere later,
instead of a ``KeyboardInterrupt`` traceback."""

import sys


def main() -> None:
    try:
        from lookbench.cli import app
        from lookbench.timeline import mark, skip_final_collection

        mark("cli imported")
        skip_final_collection()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    app(prog_name="lookbench")


if __name__ == "__main__":
    main()
