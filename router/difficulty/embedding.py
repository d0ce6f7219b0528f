"""WordLlama's token embedding, read from the files inside the installed ``wordllama`` wheel.

The ``wordllama`` package itself is never imported (its loader looks for the tokenizer under a
folder the wheel does not have, and may try a download); only its two data files are read:
``tokenizers/l2_supercat_tokenizer_config.json`` (the Llama-2 tokenizer, 32,000 pieces) and
``weights/l2_supercat_256.safetensors`` (one float16 matrix, 32,000 × 256). Nothing here
touches the network.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer, pre_tokenizers

TOKENIZER_FILE = "tokenizers/l2_supercat_tokenizer_config.json"
WEIGHTS_FILE = "weights/l2_supercat_256.safetensors"
WEIGHTS_TENSOR = "embedding.weight"


class EmbeddingFilesMissing(RuntimeError):
    """The ``wordllama`` wheel (which carries the embedding files) is not installed."""


def wordllama_dir() -> Path:
    """Where the ``wordllama`` wheel is installed, found without importing it."""
    spec = importlib.util.find_spec("wordllama")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise EmbeddingFilesMissing("the difficulty predictor needs the `wordllama` package: pip install wordllama")
    return Path(next(iter(locations)))


def load_tokenizer(root: Path | None = None) -> Tokenizer:
    """The wheel's tokenizer, split on word boundaries first (linear time on long texts)."""
    tokenizer = Tokenizer.from_file(str((root or wordllama_dir()) / TOKENIZER_FILE))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def load_token_embeddings(root: Path | None = None) -> npt.NDArray[np.float16]:
    """The 32,000 × 256 float16 token embedding matrix, parsed from the safetensors file."""
    raw = ((root or wordllama_dir()) / WEIGHTS_FILE).read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    tensor = header[WEIGHTS_TENSOR]
    if tensor["dtype"] != "F16":
        raise EmbeddingFilesMissing(f"unexpected dtype {tensor['dtype']} in {WEIGHTS_FILE}")
    start, end = tensor["data_offsets"]
    data = np.frombuffer(raw, dtype=np.float16, count=(end - start) // 2, offset=8 + header_size + start)
    return data.reshape(tensor["shape"])


def token_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False).ids
    return ids
