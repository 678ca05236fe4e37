"""Explanations in responses: `genrec.explain` when it is installed, turned into JSON with raw ids.

`explain_many(model, histories, items, top)` (or `explain(model, histories, user_row, item, top)`) returns
`Explanation` dataclasses: the explained `item`, its `score`, `contributions` as (history item, contribution)
pairs, the `method`. The item becomes its raw id, the pairs `[{"item_id": raw id, "contribution": float}]`;
numbers and text pass through; anything else is given as text. Without the module, responses say why
explanations are missing.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

import numpy as np

from genrec.data.interactions import Histories
from genrec.serving.served import ServedModel

UNAVAILABLE = "explanations are not available: this installation has no genrec.explain module"


def explainer() -> ModuleType | None:
    """The genrec.explain module, or None when it is not there."""
    try:
        return importlib.import_module("genrec.explain")
    except ImportError:
        return None


def _is_pairs(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value))


def _jsonable(name: str, value: Any, served: ServedModel) -> Any:
    if name == "item" and isinstance(value, (int, np.integer)):
        return served.raw_items([int(value)])[0]
    if _is_pairs(value):
        return [{"item_id": served.raw_items([int(i)])[0], "contribution": float(c)} for i, c in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable("", v, served) for v in value]
    return str(value)


def explain_items(module: ModuleType, served: ServedModel, items: np.ndarray, values: np.ndarray,
                  recommended: np.ndarray, top: int = 3) -> list[dict]:
    """One JSON-able explanation per recommended item index, for the user whose history is (items, values):
    `explain_many` over the history stacked once per item (batched scoring) where the module has it."""
    histories = Histories.from_lists([items], served.n_items, values=[values])
    recommended = np.asarray(recommended, np.int64)
    if hasattr(module, "explain_many"):
        found = module.explain_many(served.model, histories[np.zeros(len(recommended), np.int64)], recommended,
                                    top=top)
    else:
        found = [module.explain(served.model, histories, 0, int(item), top=top) for item in recommended]
    out = []
    for explanation in found:
        if dataclasses.is_dataclass(explanation):
            fields = {f.name: getattr(explanation, f.name) for f in dataclasses.fields(explanation)}
        elif isinstance(explanation, dict):
            fields = explanation
        else:
            fields = {"explanation": explanation}
        out.append({name: _jsonable(name, v, served) for name, v in fields.items()})
    return out
