"""Makes QNodes with transforms picklable (workflow engines ship them to workers).

A PennyLane ``Transform`` holds a ``functools.singledispatch`` function whose cache is a
weakref dictionary, which pickle rejects. Transforms importable by name travel as that name;
others (user-defined) are rebuilt from their parts.
"""

from __future__ import annotations

import copyreg
import importlib
import sys
from typing import Any

from pennylane.transforms.core import Transform


def _lookup(module: str, qualname: str) -> Transform:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _pickled_by_value(module: str) -> bool:
    """Whether cloudpickle was told to pickle ``module`` by value (workers may lack it)."""
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is None:
        return False
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module.split(".")
    return any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1))


def _rebuild(tape_transform, pass_name, kwargs, custom_qnode_transform) -> Transform:
    transform = Transform(tape_transform, pass_name, **kwargs)
    if custom_qnode_transform is not None:
        transform.custom_qnode_transform(custom_qnode_transform)
    return transform


def _reduce_transform(transform: Transform):
    module = getattr(transform, "__module__", None)
    qualname = getattr(transform, "__qualname__", None)
    if module and qualname and module != "__main__" and not _pickled_by_value(module):
        try:
            if _lookup(module, qualname) is transform:
                return _lookup, (module, qualname)
        except (ImportError, AttributeError):
            pass
    kwargs = {
        "setup_inputs": transform._setup_inputs,
        "expand_transform": transform._expand_transform,
        "classical_cotransform": transform._classical_cotransform,
        "is_informative": transform._is_informative,
        "final_transform": transform._is_final_transform,
        "use_argnum_in_expand": transform._use_argnum_in_expand,
    }
    return _rebuild, (
        transform._tape_transform,
        transform._pass_name,
        kwargs,
        transform._custom_qnode_transform,
    )


def register() -> None:
    """Register the Transform reducer with copyreg (used by pickle and cloudpickle)."""
    copyreg.pickle(Transform, _reduce_transform)
