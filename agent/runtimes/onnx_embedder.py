"""Sentence embeddings on onnxruntime: all-MiniLM-L6-v2 (int8), mean pooling, L2 norm.

Inputs are sorted by length and run in batches so that padding stays small; the session is
thread-safe, so batches from concurrent requests run on a small pool of worker threads.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from agent.errors import invalid_request
from agent.runtimes import Embeddings


class OnnxEmbedder:
    """A BERT-style sentence-embedding model exported to ONNX."""

    def __init__(
        self,
        model_id: str,
        model_path: Path,
        tokenizer_path: Path,
        *,
        threads: int,
        batch_size: int,
        dimensions: int = 384,
        max_tokens: int = 256,
    ) -> None:
        self.model_id = model_id
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The shipped tokenizer pads and truncates to 128; we pad per batch and reject
        # over-long inputs instead of silently embedding only their beginning.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._cls = self._tokenizer.token_to_id("[CLS]")
        self._sep = self._tokenizer.token_to_id("[SEP]")
        self._vocab_size = self._tokenizer.get_vocab_size()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="embed")

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        sequences = self._token_ids(inputs)
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._executor, self._embed_sequences, sequences)
        return Embeddings(vectors=vectors, prompt_tokens=sum(len(s) for s in sequences))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _token_ids(self, inputs: list[str] | list[list[int]]) -> list[list[int]]:
        if inputs and isinstance(inputs[0], str):
            sequences = [e.ids for e in self._tokenizer.encode_batch(list(inputs))]
        else:
            sequences = []
            for ids in inputs:
                if any(not 0 <= i < self._vocab_size for i in ids):
                    raise invalid_request(
                        f"Token ids must be between 0 and {self._vocab_size - 1} for this model.",
                        param="input",
                    )
                # Raw ids are the text's tokens; the model also expects its [CLS] ... [SEP].
                body = list(ids)
                if not body or body[0] != self._cls:
                    body.insert(0, self._cls)
                if body[-1] != self._sep:
                    body.append(self._sep)
                sequences.append(body)
        for index, ids in enumerate(sequences):
            if len(ids) > self.max_tokens:
                raise invalid_request(
                    f"Input {index} has {len(ids)} tokens; this model's maximum is "
                    f"{self.max_tokens}. Split the text into smaller pieces.",
                    param="input",
                    code="context_length_exceeded",
                )
        return sequences

    def _embed_sequences(self, sequences: list[list[int]]) -> np.ndarray:
        out = np.empty((len(sequences), self.dimensions), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(sequences[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                ids[row, : len(sequences[i])] = sequences[i]
                mask[row, : len(sequences[i])] = 1
            (hidden,) = self._session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[chunk] = pooled / np.clip(norms, 1e-12, None)
        return out
