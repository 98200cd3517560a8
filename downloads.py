"""Files from the internet and their checksums: one downloader for CLIP's weights and every dataset preparer.

A download streams to a temporary name beside its target with a progress bar and is renamed only when whole
(and, given a SHA256, only when it matches); with resume the partial file outlives a failure and the next call
asks the server for the rest.
"""
import hashlib
import os
import sys
import urllib.error
import urllib.request

from tqdm import tqdm


def sha256_of_file(path):
    """The file's SHA256, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: str, sha256: str = None, hint: str = "", resume: bool = False) -> str:
    """Stream url to target with a progress bar, unless target is there (with the right SHA256, if given; a file
    there with another SHA256 is named in a warning line and downloaded again).

    The bytes go to a temporary name beside the target and are renamed only once complete (and, with
    sha256, once the hash matches), so an interrupted, short or corrupt download never sits under the final
    name. With resume the temporary file is <target>.part and outlives a failure: the next call asks the server
    for the rest (an HTTP Range request) and appends it. hint: what to do instead, appended to the one-line error.
    """
    damaged = ""  # what is wrong with a file already at target, for the lines below
    if os.path.isfile(target):
        found = sha256_of_file(target) if sha256 is not None else None
        if found == sha256:
            return target
        damaged = (f"the {target} already there does not match its SHA256 (expected {sha256}, got {found}): "
                   f"damaged or truncated")
        print(f"warning: {damaged}; downloading it again", file=sys.stderr)
    folder = os.path.dirname(os.path.abspath(target))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise RuntimeError(f"{folder} cannot be created for {os.path.basename(target)} ({error.strerror or error}); "
                           f"{hint}") from None
    partial = f"{target}.part" if resume else f"{target}.{os.getpid()}.part"
    try:
        open(partial, "ab").close()  # a folder that cannot take the file says so now, not as a failed download
    except OSError as error:
        raise RuntimeError(f"{partial} cannot be written ({error.strerror or error}); {hint}") from None
    done = os.path.getsize(partial) if resume and os.path.isfile(partial) else 0
    digest = hashlib.sha256()
    complete = False
    try:
        try:
            request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
            with urllib.request.urlopen(request) as source:
                if done and getattr(source, "status", 200) != 206:  # the server sends it whole: start again
                    done = 0
                if done:
                    with open(partial, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            digest.update(block)
                size = int(source.headers.get("Content-Length") or 0) or None
                total = done + size if size else None
                with open(partial, "ab" if done else "wb") as out, \
                        tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=os.path.basename(target)) as bar:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
                if total and bar.n != total:  # a connection closed early ends the stream without an error
                    raise OSError(f"the connection closed after {bar.n} of {total} bytes")
        except (urllib.error.URLError, OSError) as error:
            kept = f" ({os.path.getsize(partial)} bytes kept in {partial}: run again to resume)" if resume and \
                os.path.isfile(partial) and os.path.getsize(partial) else ""
            instead = f"; {damaged}, delete it or replace it with a whole copy" if damaged else ""
            raise RuntimeError(f"could not download {url} ({getattr(error, 'reason', error)}){kept}{instead}; "
                               f"{hint}") from None
        complete = True
        if sha256 is not None and digest.hexdigest() != sha256:
            raise RuntimeError(f"downloaded {os.path.basename(target)} does not match its SHA256 (expected {sha256}, "
                               f"got {digest.hexdigest()}); the file was deleted, try again")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial) and (complete or not resume):  # a resumable part stays until it is whole
            os.remove(partial)
    return target
