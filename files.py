"""Files that are whole or absent: results, pictures, checkpoints and prompts files are written to a temporary twin
and renamed into place only when complete, and a folder a run created is removed again if the run left it empty.
Library code writes through here; cli.py adds the command line's one-line errors on top."""
import contextlib
import json
import os
import tempfile


class OutputFile:
    """A file written at the end of a run, whose temporary twin is created at the start: a place that cannot be
    written fails before the work (as root too, where permission bits say nothing), named as the user typed it.
    A missing folder is created (and removed again if the run writes nothing into it).

        with OutputFile(args.output) as output:   # the temporary file exists from here on
            ...                                    # any failure removes it
            output.write_json(results)             # renamed over the final name only when complete

    If the final write fails after the work is done (a full disk, say), write_json saves the results to a
    fallback file in the temporary folder (or, failing that, prints them) and raises a ValueError naming both.
    """

    def __init__(self, path, what="--output"):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"{what} {path} is a directory; give a file name")
        self.created = created_folders(folder, f"{what} {path}")
        try:
            fd, self.partial = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
        except OSError as error:
            remove_folders(self.created)
            raise ValueError(f"{what} {path} cannot be written ({error.strerror or error}); choose another place") from None
        os.close(fd)
        self.path, self.what = path, what

    def write(self, data):
        try:
            with open(self.partial, "wb") as f:
                f.write(data)
        except OSError as error:
            raise ValueError(f"{self.what} {self.path} cannot be written ({error.strerror or error})") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.partial, 0o666 & ~umask)  # mkstemp's 0600 would make results private to their writer
        os.replace(self.partial, self.path)
        self.created = []

    def write_json(self, data):
        """Strict JSON (NaN and infinity are refused, as JSON.parse refuses them); never lost after the work."""
        text = json_text(data)
        try:
            self.write(text.encode())
        except ValueError as error:
            fallback = os.path.join(tempfile.gettempdir(), f"{os.path.basename(self.path)}.{os.getpid()}.json")
            try:
                with open(fallback, "w") as f:
                    f.write(text)
            except OSError:
                print(text)
                raise ValueError(f"{error}; the results are printed above instead") from None
            raise ValueError(f"{error}; the results were written to {fallback} instead") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if os.path.exists(self.partial):
            os.remove(self.partial)
        remove_folders(self.created)


def json_text(data):
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def created_folders(folder, what):
    """Create folder and any missing parents; returns those created, innermost first (a ValueError naming what
    if it cannot be created)."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        for path in reversed(missing):
            os.mkdir(path)
    except OSError as error:
        remove_folders([path for path in missing if os.path.isdir(path)])
        raise ValueError(f"{what}: the folder {missing[0]} cannot be created ({error.strerror or error}); choose another "
                         f"place") from None
    return missing


def remove_folders(folders):
    """Remove the folders this run created, innermost first, where they are still empty."""
    for folder in folders:
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


@contextlib.contextmanager
def output_dir(path, what):
    """Create the folder path (and check that files can be written in it); if the block fails and the folder
    is still empty, remove what was created, so a failed run leaves nothing behind."""
    created = created_folders(os.path.abspath(path), f"{what} {path}")
    try:
        probe = OutputFile(os.path.join(path, ".write-test"), what)
    except ValueError:
        remove_folders(created)
        raise ValueError(f"{what} {path} is not writable; choose another place") from None
    probe.__exit__()
    try:
        yield path
    except BaseException:
        remove_folders(created)
        raise


def read_document(path, what, kind):
    """A JSON or YAML file's content, or a ValueError naming the flag (what), the file and what is wrong."""
    import yaml
    parse, errors = (json.load, json.JSONDecodeError) if kind == "JSON" else (yaml.safe_load, yaml.YAMLError)
    try:
        with open(path) as f:
            return parse(f)
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    except errors as error:
        raise ValueError(f"{what} {path} is not {kind} ({str(error).splitlines()[0]})") from None


def size_of(path):
    """A file's or folder's size on disk, for messages: '412.3 MB'."""
    if os.path.isdir(path):
        total = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)
    else:
        total = os.path.getsize(path)
    return f"{total / 1e6:.1f} MB"


def write_file(path, data, what="file"):
    """bytes into a temporary file beside path, renamed over path only when complete."""
    write_files({path: data}, what)


def write_files(files, what="file"):
    """{path: bytes}, all or none: every file is written to a temporary twin first (where a full disk fails), then
    all are renamed into place. A failure removes the twins and is a ValueError naming the file and `what` (the
    flag that chose the place)."""
    taken = [path for path in files if os.path.isdir(path)]
    if taken:  # found before anything is written, so that the files stay all or none
        raise ValueError(f"cannot write {taken[0]}: it is a folder; choose another place ({what})")
    partials, path = {}, None
    try:
        for path, data in files.items():
            fd, partials[path] = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                                  prefix=f".{os.path.basename(path)}.", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    except OSError as error:
        for partial in partials.values():
            if os.path.exists(partial):
                os.remove(partial)
        raise ValueError(f"cannot write {path} ({error.strerror or error}); free space there or choose another "
                         f"place ({what})") from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path, partial in partials.items():
            os.chmod(partial, 0o666 & ~umask)
            os.replace(partial, path)
    except OSError as error:  # a folder that became unwritable, a path taken by a folder: said, twins removed
        for partial in partials.values():
            if os.path.exists(partial):
                os.remove(partial)
        raise ValueError(f"cannot write {path} ({error.strerror or error}); choose another place ({what})") from None
