"""Loading a saved scikit-learn estimator file (`.skops`) without running code from it.

A model folder may come from anyone who can write to a registry, so the file is read as data: its schema is
checked against the exact types (and the skops loader of each) that `TfidfModel.save` writes, and anything
else is refused before skops constructs a single object. skops' own audit alone is not enough: it trusts
whatever the caller lists, and a loader such as `ConstructorFromReduceNode` calls the named type with
arguments from the file (`builtins.exec("...")`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# (type, skops loader) pairs a TF-IDF model's estimators file holds; nothing else is ever constructed.
ALLOWED_NODES: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins.dict", "DictNode"),
        ("builtins.list", "ListNode"),
        ("builtins.tuple", "TupleNode"),
        ("builtins.str", "JsonNode"),  # every JSON scalar (str, int, float, bool, None)
        ("builtins.str", "TypeNode"),  # dict key types
        ("numpy.float64", "TypeNode"),  # the vectorizers' dtype
        ("numpy.ndarray", "NdArrayNode"),  # read with allow_pickle=False
        ("sklearn.pipeline.FeatureUnion", "ObjectNode"),
        ("sklearn.feature_extraction.text.TfidfVectorizer", "ObjectNode"),
        ("sklearn.feature_extraction.text.TfidfTransformer", "ObjectNode"),
        ("sklearn.linear_model._logistic.LogisticRegression", "ObjectNode"),
    }
)
_SCHEMA = "schema.json"


class UntrustedModelFile(ValueError):
    """A model file holds something the project never saves; loading it could run code."""


def _nodes(schema: Any) -> Iterator[tuple[str, str]]:
    """Every (type, loader) in a skops schema, however deeply nested (dict keys' types included)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node or "__class__" in node:
                yield f"{node.get('__module__')}.{node.get('__class__')}", str(node.get("__loader__"))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def untrusted_nodes(file: Path) -> list[str]:
    """The entries of `file` outside `ALLOWED_NODES`, as `type (loader)`; empty for a file the project wrote."""
    try:
        with zipfile.ZipFile(file) as archive:
            schema = json.loads(archive.read(_SCHEMA))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UntrustedModelFile(f"{file}: not a skops estimators file ({exc})") from None
    return sorted({f"{kind} ({loader})" for kind, loader in _nodes(schema) if (kind, loader) not in ALLOWED_NODES})


def load_estimators(file: Path) -> Any:
    """Load `file` if it holds only the allowed types; otherwise refuse, naming the file and the types."""
    import skops.io

    file = Path(file)
    refused = untrusted_nodes(file)
    if refused:
        raise UntrustedModelFile(
            f"{file}: refusing to load untrusted type {', '.join(refused)}; "
            "a saved TF-IDF model holds only scikit-learn estimators, numpy arrays and plain values"
        )
    allowed_types = sorted({kind for kind, _ in ALLOWED_NODES})
    return skops.io.load(file, trusted=[t for t in skops.io.get_untrusted_types(file=file) if t in allowed_types])
