"""Content digests of module weights, for cache keys that follow the weights actually loaded."""

import hashlib

import torch
from torch import nn


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: the names, dtypes, shapes and bytes of its parameters and buffers."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
