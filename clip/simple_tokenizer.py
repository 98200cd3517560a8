"""CLIP's byte-level BPE tokenizer: text -> token ids, the same ids as OpenAI's release.

The vocabulary file lists BPE merges in priority order; the id table is
256 byte symbols, the same 256 with an end-of-word mark '</w>', one symbol per merge,
then <|startoftext|> and <|endoftext|> (49408 ids in all).
"""
import gzip
import html
import os
from functools import lru_cache

import ftfy
import regex

VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2  # the release uses the first 48894 merges of the file
START, END = "<|startoftext|>", "<|endoftext|>"

# Special tokens, English contractions, runs of letters, single digits, runs of other non-space symbols.
WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE)


@lru_cache()
def byte_symbols():
    """Map each byte 0..255 to a printable unicode character, so BPE never sees whitespace or control codes.

    Printable bytes stand for themselves; the rest take the characters from U+0100 on, in byte order.
    The dict's order is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def clean(text):
    """Repair mojibake, undo (double) HTML escaping, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return regex.sub(r"\s+", " ", text.strip()).strip().lower()


class SimpleTokenizer:
    def __init__(self, bpe_path: str = VOCAB_PATH):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]  # line 0 is a version header
        self.byte_encoder = byte_symbols()
        self.byte_decoder = {s: b for b, s in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self.cache = {START: START, END: END}

    def bpe(self, word):
        """Split one pre-tokenized word into vocabulary symbols, space-separated."""
        if word in self.cache:
            return self.cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            # Apply the highest-priority merge present anywhere in the word, at every place it occurs.
            pairs = set(zip(parts, parts[1:]))
            best = min(pairs, key=lambda pair: self.merge_rank.get(pair, float("inf")))
            if best not in self.merge_rank:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = " ".join(parts)
        self.cache[word] = result
        return result

    def encode(self, text):
        ids = []
        for word in WORD_PATTERN.findall(clean(text)):
            word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(word).split(" "))
        return ids

    def decode(self, ids):
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")
