"""Command-line plumbing shared by eval.py, predict.py and bench.py: one-line errors and atomic writes."""
import argparse
import json
import os
import sys
import tempfile


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


def check_writable_file(path, what="--output"):
    """Fail now, not after an hour of work, if path cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {path}: the directory {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{what} {path}: the directory {folder} is not writable; choose another place")


def check_writable_dir(path, what):
    """Create path if needed and make sure files can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be created ({error.strerror}); choose another place") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} is not writable; choose another place")


def atomic_write(path, write):
    """write(file_object) into a temporary file beside path, renamed over path only when complete."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would make results private to their writer
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json(path, data):
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
