"""eval.py --sweep FILE: a JSON list of prompt settings, each read with the same meaning and checks as the flags.

    [{"name": "paper"}, {"name": "warm", "temperature": 0.2}, {"name": "metric", "depth_classes": [...], "bins": [...]}]

What an entry leaves out comes from the command line; image-side flags (--clip_model, --features, ...) are shared
by every entry, so all of them are scored from one pass of the image tower.
"""
import difflib

import cli
from learned_prompts import WORD_SETTINGS, prompts_from
from options import SWEEP_KEYS


def read(path, args):
    """[(name, DepthPrompts, the entry's own settings)] from a sweep file; what an entry leaves out comes from
    args. Every entry is checked before anything runs; a bad one is a ValueError naming it and its key."""
    entries = cli.read_document(path, "--sweep", "JSON")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"--sweep {path} must hold a non-empty JSON list of settings, e.g. "
                         f"[{{\"name\": \"paper\"}}, {{\"name\": \"warm\", \"temperature\": 0.2}}]")
    runs, names = [], set()
    for number, entry in enumerate(entries, start=1):
        where = f"--sweep {path}, entry {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is a {type(entry).__name__}, not an object of settings")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where} needs a \"name\" (a non-empty string)")
        where += f" ({name!r})"
        if name in names:
            raise ValueError(f"{where}: the name is used twice; give each entry its own")
        names.add(name)
        unknown = [key for key in entry if key not in SWEEP_KEYS]
        if unknown:
            near = difflib.get_close_matches(str(unknown[0]), SWEEP_KEYS, n=1)
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; "
                             + (f"did you mean {near[0]!r}? " if near else "") + f"an entry takes {', '.join(SWEEP_KEYS)} "
                             f"(image-side flags such as --clip_model are shared, given on the command line)")
        for one, other in [("prompt_set", "depth_classes"), ("bin_set", "bins")]:
            if one in entry and other in entry:
                raise ValueError(f"{where}: give {one!r} or {other!r}, not both")
        for key in ("depth_classes", "templates", "objects"):
            if key in entry and not (isinstance(entry[key], list) and all(isinstance(v, str) for v in entry[key])):
                raise ValueError(f"{where}: {key!r} must be a list of strings")
        for key in ("prompts", "prompts_config"):
            if key in entry and not isinstance(entry[key], str):
                raise ValueError(f"{where}: {key!r} must be a file path (a string)")
        if "bins" in entry and not isinstance(entry["bins"], list):
            raise ValueError(f"{where}: 'bins' must be a list of numbers (metres)")
        settings = vars(args).copy()
        if "prompts" in entry:  # learned tokens replace the command line's words, and words its tokens
            settings.update({key: None for key in WORD_SETTINGS})
        elif any(key in entry for key in WORD_SETTINGS):
            settings.update(prompts=None, prompts_config=None)
        if "prompt_set" in entry or "depth_classes" in entry:  # an entry's words replace the command line's
            settings.update(prompt_set=None, depth_classes=None)
        if "bin_set" in entry or "bins" in entry:
            settings.update(bin_set=None, bins=None)
        settings.update((key, value) for key, value in entry.items() if key != "name")
        try:
            prompts = prompts_from(settings, where=None)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        runs.append((name, prompts, {"prompt_set": settings["prompt_set"], "bin_set": settings["bin_set"]}))
    return runs
