"""Sentence embeddings for the variety phase, cached on disk so that a re-run embeds nothing twice.

The cache key is the model's identity plus the text, so the same text embedded by the same weights is
found again in any later run, on any machine that shares the cache file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lift_local import console
from lift_local.store import Store

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_SMALL_FILE = 1 << 20  # files up to this size (configs, tokenizer) enter the model identity whole
_BATCHES_PER_CHUNK = 4  # batches per encode call; each chunk is stored at once and advances the progress bar


def model_identity(folder: Path | str) -> str:
    """A fingerprint of a model folder that does not depend on where the folder is.

    Cheap on purpose: small files (configs, tokenizer) are hashed whole, weights only by name and size.
    Hidden files (.gitattributes, caches) are left out: they do not change what the model computes.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        size = path.stat().st_size
        digest.update(f"{relative.as_posix()}\0{size}\0".encode())
        if size <= _SMALL_FILE:
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Embedder:
    """A sentence-transformers model behind a cache: `embed` runs the model only on texts not seen before.

    The model is loaded on the first cache miss, so a fully cached run never loads it.
    """

    def __init__(
        self,
        model_dir: Path | str,
        store: Store | None = None,
        batch_size: int = 32,
        device: str | None = None,
    ):
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"embedding model folder {self.model_dir} does not exist")
        if not any((self.model_dir / name).is_file() for name in ("modules.json", "config.json")):
            raise ValueError(
                f"{self.model_dir} is not a sentence-transformers model folder (no modules.json or config.json)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.identity = model_identity(self.model_dir)
        self.store = store
        self.batch_size = batch_size
        self.device = device
        self._model = None

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            from sentence_transformers import SentenceTransformer  # noqa: F811 (slow import: only when needed)

            self._model = SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts` as float32 (len(texts), dimension), in the order given.

        Texts go longest first, as sentence-transformers orders them within one call; sorting all of them
        before chunking gives every batch the same padding a single `encode` call would.
        """
        if not texts:
            return np.empty((0, self.model.get_embedding_dimension()), dtype=np.float32)
        keyed = {self._key(text): text for text in texts}

        def encode(keys: list[str]) -> np.ndarray:
            return self.model.encode([keyed[key] for key in keys], batch_size=self.batch_size, convert_to_numpy=True,
                                     show_progress_bar=False)

        return cached_vectors(list(map(self._key, texts)), self.store, encode, self.batch_size * _BATCHES_PER_CHUNK,
                              order=lambda key: -len(keyed[key]), desc="embedding", unit="text")

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.identity}\x1f{text}".encode()).hexdigest()


def cached_vectors(keys: list[str], store: Store | None, compute: Callable[[list[str]], np.ndarray], chunk: int, *,
                   order: Callable[[str], Any], desc: str, unit: str) -> np.ndarray:
    """float32 vectors for `keys`, in their order, each computed at most once: those in `store` are read; the
    others, once each, go to `compute` a chunk at a time sorted by `order`, and each chunk is stored as soon as
    it is made, so an interrupted run keeps all but the chunk in hand. Shows a progress bar."""
    found = store.get_many(keys) if store is not None else {}
    missing = sorted({key for key in keys if key not in found}, key=order)
    with console.Progress(len(missing), desc, unit, disable=not missing) as progress:
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            values = {key: vector.astype(np.float32).tobytes() for key, vector in zip(part, compute(part))}
            if store is not None:
                store.put_many(values)
            found.update(values)
            progress.update(len(part))
    return np.stack([np.frombuffer(found[key], dtype=np.float32) for key in keys])
