#!/usr/bin/env python3
"""Seeds the fuzz corpora from what the repository already has: the sample function-URL
events in events/ (whole, for lambda_events; their bodies, for sources) and the captured
deliveries in tests/fixtures/samples/ (bodies, for sources). Writes fuzz/corpus/<target>/."""
import json
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"
# The order of `sources![...]` in src/sources/mod.rs: a sources seed starts with the index.
order = re.search(r"sources!\[(.*?)\]", (root / "src/sources/mod.rs").read_text(), re.S).group(1)
sources = [s.strip() for s in order.split(",") if s.strip()]
for target in ["sources", "lambda_events", "plan", "router"]:
    (corpus / target).mkdir(parents=True, exist_ok=True)

count = 0
for event in sorted((root / "events").glob("*.json")):
    text = event.read_bytes()
    (corpus / "lambda_events" / f"seed-{event.stem}").write_bytes(text)
    data = json.loads(text)
    source = data.get("rawPath", "").split("/")[2] if data.get("rawPath", "").startswith("/hooks/") else "generic"
    if source in sources and isinstance(data.get("body"), str):
        (corpus / "sources" / f"seed-{event.stem}").write_bytes(bytes([sources.index(source)]) + data["body"].encode())
        count += 1
for sample in sorted((root / "tests/fixtures/samples").glob("*/*.json")):
    source = sample.parent.name
    if source in sources:
        (corpus / "sources" / f"seed-{source}-{sample.stem}").write_bytes(bytes([sources.index(source)]) + sample.read_bytes())
        count += 1
print(f"fuzz/seed.py: {count} sources seeds, {len(list((root / 'events').glob('*.json')))} lambda_events seeds")
