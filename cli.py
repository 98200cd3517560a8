"""Command-line plumbing shared by every script: one-line errors and files that are whole or absent."""
import argparse
import contextlib
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


class OutputFile:
    """A file written at the end of a run, whose temporary twin is created at the start: a place that cannot be
    written fails before the work (as root too, where permission bits say nothing), named as the user typed it.

        with OutputFile(args.output) as output:   # the temporary file exists from here on
            ...                                    # any failure removes it
            output.write_json(results)             # renamed over the final name only when complete
    """

    def __init__(self, path, what="--output"):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"{what} {path} is a directory; give a file name")
        if not os.path.isdir(folder):
            raise ValueError(f"{what} {path}: the directory {folder} does not exist; create it first")
        try:
            fd, self.partial = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
        except OSError as error:
            raise ValueError(f"{what} {path} cannot be written ({error.strerror}); choose another place") from None
        os.close(fd)
        self.path = path

    def write(self, data):
        with open(self.partial, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.partial, 0o666 & ~umask)  # mkstemp's 0600 would make results private to their writer
        os.replace(self.partial, self.path)

    def write_json(self, data):
        self.write((json.dumps(data, indent=2) + "\n").encode())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if os.path.exists(self.partial):
            os.remove(self.partial)


@contextlib.contextmanager
def output_dir(path, what):
    """Create the folder path (and check that files can be written in it); if the block fails and the folder
    is still empty, remove what was created, so a failed run leaves nothing behind."""
    existed = os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
        probe = OutputFile(os.path.join(path, ".write-test"), what)
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be created ({error.strerror}); choose another place") from None
    except ValueError:
        raise ValueError(f"{what} {path} is not writable; choose another place") from None
    probe.__exit__()
    try:
        yield path
    except BaseException:
        if not existed and not os.listdir(path):
            os.rmdir(path)
        raise


def write_file(path, data):
    """bytes into a temporary file beside path, renamed over path only when complete."""
    with OutputFile(path, "file") as output:
        output.write(data)
