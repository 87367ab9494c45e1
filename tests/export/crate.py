"""Checking an exported RO-Crate offline: its metadata must be JSON-LD that expands under the
RO-Crate context (bundled with ro-crate-py, served by a local document loader: nothing is
fetched), with every term known, every file of the zip listed with its right sha256 and
size, and ro-crate-py must read it."""

from __future__ import annotations

import hashlib
import json
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from pyld import jsonld  # type: ignore[import-untyped]
from rocrate.rocrate import ROCrate  # type: ignore[import-untyped]

RO_CRATE_CONTEXT = "https://w3id.org/ro/crate/1.1/context"
BASE = "arcp://uuid,2a7b1f52-7f2f-4c7e-9d8c-f1e2d3c4b5a6/"


def _loader(url: str, options: Any = None) -> dict[str, Any]:
    if url != RO_CRATE_CONTEXT:
        raise AssertionError(f"the crate refers to a context that is not RO-Crate's: {url}")
    bundled = resources.files("rocrate") / "data" / "ro-crate.jsonld"
    return {
        "contentType": "application/ld+json",
        "contextUrl": None,
        "documentUrl": url,
        "document": json.loads(bundled.read_text()),
    }


def check_crate(path: Path, extract_to: Path) -> dict[str, Any]:
    """Validates the crate at `path` (see the module docstring); returns its entities by
    @id."""
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        z.extractall(extract_to)
        names = {n for n in z.namelist() if not n.endswith("/")}
    document = json.loads((extract_to / "ro-crate-metadata.json").read_text())
    # Relative @ids resolve against a base of the crate's own (the RO-Crate convention).
    expanded = {
        e["@id"]: e for e in jsonld.expand(document, {"documentLoader": _loader, "base": BASE})
    }
    # Every property of every entity expanded to an absolute IRI: no unknown term dropped.
    for entity in document["@graph"]:
        match = expanded[urljoin(BASE, entity["@id"])]
        properties = [k for k in entity if not k.startswith("@")]
        assert len([k for k in match if not k.startswith("@")]) == len(properties), entity
    entities = {e["@id"]: e for e in document["@graph"]}
    files = {e["@id"] for e in document["@graph"] if e.get("@type") == "File"}
    assert files == names - {"ro-crate-metadata.json"}, "every file listed, nothing else"
    root = entities["./"]
    assert {p["@id"] for p in root["hasPart"]} == files
    for name in files:
        data = (extract_to / name).read_bytes()
        assert entities[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert entities[name]["contentSize"] == str(len(data)), name
    crate = ROCrate(extract_to)  # ro-crate-py reads it too
    assert crate.root_dataset["conformsTo"] is not None
    return entities
