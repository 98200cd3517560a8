"""Command-line plumbing shared by every script: one-line errors, number flags with ranges, optional packages asked
for at start. Files that are whole or absent live in files.py (a library module), named here for the scripts."""
import argparse
import math
import os  # noqa: F401  (cli.os: tests and users' scripts patch os functions through it, as before files.py)
import sys

from files import OutputFile, json_text, output_dir, read_document, size_of, write_file, write_files  # noqa: F401


def one_line(error):
    """A single line for an exception; a DataLoader worker's wrapped error is reduced to its own message."""
    text = str(error).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original's last line
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if lines else type(error).__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error here."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def bounded(kind, at_least=None, more_than=None, at_most=None):
    """An argparse type: a finite number of kind (int or float) in the range given; anything else is one line naming
    the range (argparse puts the flag before it)."""
    what = "an integer" if kind is int else "a number"
    limits = [f"at least {at_least}" if at_least is not None else None,
              f"more than {more_than}" if more_than is not None else None,
              f"at most {at_most}" if at_most is not None else None]
    wanted = f"{what} " + " and ".join(limit for limit in limits if limit) if any(limits) else what

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or (at_least is not None and value < at_least) or \
                (more_than is not None and value <= more_than) or (at_most is not None and value > at_most):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {wanted}")
        return value
    parse.__name__ = wanted  # argparse names the type by it in messages of its own
    return parse


class OldSpelling(argparse.Action):
    """A flag's old name: sets the new one's destination and says the new name in one line on stderr."""

    def __init__(self, option_strings, dest, new, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is spelled {self.new} now; it works as before", file=sys.stderr)
        setattr(namespace, self.dest, values)


def require(package, flag, install=None):
    """ValueError naming the flag and the install command when an optional package it needs is not importable;
    checked when the flags are read, before any model or data loads."""
    import importlib.util
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"{flag} needs the {package} package, which is not installed: "
                         f"pip install {install or package}")


def run(main):
    """Call main(); any failure becomes `error: <one line>` on stderr and exit status 1 (traceback with --debug)."""
    try:
        return main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if "--debug" in sys.argv:
            raise
        print(f"error: {one_line(error)} (rerun with --debug for the traceback)"
              if not isinstance(error, (ValueError, OSError, RuntimeError)) else f"error: {one_line(error)}",
              file=sys.stderr)
        sys.exit(1)

