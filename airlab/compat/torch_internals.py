"""torch's and numpy's private names that airlab relies on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader


def tensor_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The 2-norm of each tensor in one fused kernel (``torch._foreach_norm``, what
    ``clip_grad_norm_`` uses): the non-finite guard checks every gradient with one device sync."""
    return list(torch._foreach_norm(list(tensors)))


class IndexSamplerHook(DataLoader):
    """torch's ``DataLoader``, whose index sampler passes through :meth:`wrap_index_sampler`.

    A pass's iterator reads the private ``_index_sampler`` property once, when it is made: wrapping it
    is the one place where a pass can skip batches on the indices, before any of them is loaded, whatever
    sampler Lightning (or DDP) put in. The resumable loader skips the batches already trained on.
    """

    def wrap_index_sampler(self, sampler: Any) -> Any:
        """The index sampler this pass uses; by default ``sampler`` itself."""
        return sampler

    @property
    def _index_sampler(self) -> Any:
        return self.wrap_index_sampler(super()._index_sampler)


def add_load_state_dict_pre_hook(module: torch.nn.Module, hook: Any) -> None:
    """Call ``hook(state_dict, prefix, *rest)`` before ``module`` loads a state dict, to convert an old
    layout of its tensors (``nn.Module._register_load_state_dict_pre_hook``: the public
    ``register_load_state_dict_pre_hook`` passes the module first, and is not in every torch >= 2.4)."""
    module._register_load_state_dict_pre_hook(hook)


def summary_file_writer(writer: Any) -> Any:
    """The event-file writer of a ``torch.utils.tensorboard.SummaryWriter``: the one way to add a
    prepared summary protocol buffer (the hparams plugin's) to the run's own event file."""
    return writer._get_file_writer()


def numpy_array_types() -> list[Any]:
    """The globals a pickled numpy array or scalar needs (array reconstruction and dtypes): data only.
    Unpickling an array calls numpy's private ``multiarray._reconstruct`` (``numpy._core`` since 2.0)."""
    core = np._core if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else np.core
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]
