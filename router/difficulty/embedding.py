"""WordLlama's vocabulary and token embedding, read from the files inside the installed ``wordllama`` wheel.

The ``wordllama`` package itself is never imported (its loader looks for the tokenizer under a
folder the wheel does not have, and may try a download); only its data files are read:
``tokenizers/l2_supercat_tokenizer_config.json`` (the Llama-2 vocabulary, 32,000 pieces) and,
at training time only, ``weights/l2_supercat_256.safetensors`` (one float16 matrix, 32,000 × 256).
Nothing here touches the network.

Tokenisation is the predictor's own, in pure Python, the same at training and at run time: the
text is split on whitespace and each word, prefixed with "▁" as in the Llama vocabulary, is one
piece when the vocabulary has it (most words are); the others are cut into letters runs, single
digits (Llama splits numbers into digits) and symbol runs, each looked up the same way and, when
still unknown, split greedily into the longest known prefixes, characters without a piece falling back to their UTF-8 byte pieces. That is not the
exact BPE segmentation, but it picks the same whole-word pieces for common words, needs only the
vocabulary (no ``tokenizers`` library, no merge table in memory) and costs one dict look-up per
common word.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

TOKENIZER_FILE = "tokenizers/l2_supercat_tokenizer_config.json"
WEIGHTS_FILE = "weights/l2_supercat_256.safetensors"
WEIGHTS_TENSOR = "embedding.weight"
WORD_START = "▁"
# Letter runs, single digits and runs of other symbols (the first with the word-start mark).
_PIECE = re.compile(r"▁?[^\W\d_]+|\d|▁?[^\w▁]+|▁?_+|▁")
MAX_WORD_CHARS = 48
SPLIT_CACHE_WORDS = 8192  # a longer "word" (a hash, a URL, a run of symbols) is cut: it carries no more signal


class EmbeddingFilesMissing(RuntimeError):
    """The ``wordllama`` wheel (which carries the embedding files) is not installed, or is another version."""


def wordllama_dir() -> Path:
    """Where the ``wordllama`` wheel is installed, found without importing it."""
    spec = importlib.util.find_spec("wordllama")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise EmbeddingFilesMissing("the difficulty predictor needs the `wordllama` package: pip install wordllama")
    return Path(next(iter(locations)))


def tokenizer_file(root: Path | None = None) -> Path:
    return (root or wordllama_dir()) / TOKENIZER_FILE


def load_vocabulary(root: Path | None = None, expected_sha256: str | None = None) -> dict[str, int]:
    """Piece → token id, parsed from the tokenizer file's ``vocab`` object only (the merges are skipped)."""
    raw = tokenizer_file(root).read_bytes()
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise EmbeddingFilesMissing(
            f"the installed wordllama tokenizer differs from the one the difficulty model was trained on "
            f"({TOKENIZER_FILE}): install the wordllama version named in model.json or re-train"
        )
    text = raw.decode("utf-8")
    del raw
    start = text.index("{", text.index('"vocab"'))
    vocabulary, _ = json.JSONDecoder().raw_decode(text, start)
    if not isinstance(vocabulary, dict) or not vocabulary:
        raise EmbeddingFilesMissing(f"no vocabulary in {TOKENIZER_FILE}")
    return {str(piece): int(token) for piece, token in vocabulary.items()}


class Tokenizer:
    """Greedy longest-piece tokenisation over the Llama vocabulary (see the module docstring)."""

    def __init__(self, vocabulary: dict[str, int]):
        self._vocabulary = vocabulary
        self.size = max(vocabulary.values()) + 1
        # Words that are not one piece, with their pieces: real text repeats them (as the
        # ``tokenizers`` BPE cache does); bounded, emptied when full.
        self._pieces: dict[str, tuple[int, ...]] = {}
        self._longest = max(len(piece) for piece in vocabulary)
        self._bytes = [vocabulary.get(f"<0x{b:02X}>", vocabulary.get("<unk>", 0)) for b in range(256)]

    def ids(self, text: str) -> list[int]:
        words = text.split()
        looked_up = [self._vocabulary.get(WORD_START + word) for word in words]
        if None not in looked_up:
            return looked_up  # type: ignore[return-value]  # no None left: every word is one piece
        out: list[int] = []
        for word, token in zip(words, looked_up, strict=True):
            if token is not None:
                out.append(token)
            else:
                out.extend(self._pieces.get(word) or self._split_word(word))
        return out

    def _split_word(self, word: str) -> tuple[int, ...]:
        out: list[int] = []
        for piece in _PIECE.findall(WORD_START + word[:MAX_WORD_CHARS]):
            token = self._vocabulary.get(piece)
            if token is not None:
                out.append(token)
            else:
                self._split(piece, out)
        if len(self._pieces) >= SPLIT_CACHE_WORDS:
            self._pieces.clear()
        self._pieces[word] = pieces = tuple(out)
        return pieces

    def clear_cache(self) -> None:
        """Forget the split words (the benchmark scores with a cold cache too)."""
        self._pieces.clear()

    def _split(self, piece: str, out: list[int]) -> None:
        vocabulary, start, end = self._vocabulary, 0, len(piece)
        while start < end:
            for stop in range(min(end, start + self._longest), start, -1):
                token = vocabulary.get(piece[start:stop])
                if token is not None:
                    out.append(token)
                    start = stop
                    break
            else:
                out.extend(self._bytes[b] for b in piece[start].encode("utf-8", "replace"))
                start += 1


def load_token_embeddings(root: Path | None = None) -> npt.NDArray[np.float16]:
    """The 32,000 × 256 float16 token embedding matrix, parsed from the safetensors file (training only)."""
    import numpy as np

    raw = ((root or wordllama_dir()) / WEIGHTS_FILE).read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    tensor = header[WEIGHTS_TENSOR]
    if tensor["dtype"] != "F16":
        raise EmbeddingFilesMissing(f"unexpected dtype {tensor['dtype']} in {WEIGHTS_FILE}")
    start, end = tensor["data_offsets"]
    data = np.frombuffer(raw, dtype=np.float16, count=(end - start) // 2, offset=8 + header_size + start)
    return data.reshape(tensor["shape"])
