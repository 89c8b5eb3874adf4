"""Tune data: sources → cleaning → stratified split → WebDataset shards that read back whole, and resume."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.tune.bench import make_shapes
from engine.tune.data import (
    ALL_SPLITS,
    SPLITS,
    Pair,
    ShardDataset,
    llm_caption_cleaner,
    pairs_from_library,
    pairs_from_tagging,
    prepare,
    read_split,
    split_pairs,
)
from tests.engine.test_catalog_llm import completion


def add_rows(csv_path: Path, rows: list[dict[str, str]]) -> None:
    with csv_path.open("a", newline="", encoding="utf-8") as fh:
        csv.DictWriter(fh, fieldnames=["file", "caption", "label"]).writerows(rows)


@pytest.fixture
def shapes(tmp_path) -> tuple[Path, Path]:
    """54 good pairs plus one of each kind of bad row: duplicate image, truncated image, not an image, missing
    file, empty caption."""
    folder = tmp_path / "images"
    csv_path = make_shapes(folder, per_class=6, seed=3)
    good = (folder / "red-circle-000.png").read_bytes()
    shutil.copy(folder / "red-circle-000.png", folder / "copy.png")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("not a picture")
    add_rows(
        csv_path,
        [
            {"file": "copy.png", "caption": "a red circle again", "label": "red circle"},
            {"file": "truncated.png", "caption": "a blue square", "label": "blue square"},
            {"file": "notes.png", "caption": "a green circle", "label": "green circle"},
            {"file": "missing.png", "caption": "a red square", "label": "red square"},
            {"file": "blue-circle-001.png", "caption": "   ", "label": "blue circle"},
        ],
    )
    return folder, csv_path


def keys_of(data_dir: Path, split: str) -> list[str]:
    ds = ShardDataset(data_dir, split)
    try:
        return [ds.index[i][1] for i in range(len(ds))]
    finally:
        ds.close()


def test_shards_round_trip_per_split(shapes, tmp_path):
    import webdataset as wds

    folder, csv_path = shapes
    out = tmp_path / "data"
    result = prepare(out, images=folder, captions=csv_path, shard_size=8, seed=1)
    assert result["samples"] == 54 and result["labels"] == 9
    reasons = {d["name"]: d["reason"] for d in result["dropped_examples"]}
    assert result["dropped"] == 5 and set(reasons) == {"copy.png", "truncated.png", "notes.png", "missing.png",
                                                       "blue-circle-001.png"}  # fmt: skip
    assert "duplicate of red-circle-000.png" in reasons["copy.png"]
    assert "not found" in reasons["missing.png"] and "empty caption" in reasons["blue-circle-001.png"]

    manifest = json.loads((out / "manifest.json").read_text())
    counts = {s: manifest["splits"][s]["samples"] for s in ALL_SPLITS}
    assert [counts[s] for s in SPLITS] == [43, 6, 5] or [counts[s] for s in SPLITS] == [43, 5, 6]
    assert counts["mini_train"] == counts["train"]  # fewer than the default 1000: the whole of train
    for split in ALL_SPLITS:
        samples = list(read_split(out, split))
        assert len(samples) == counts[split]
        image, text, meta = samples[0]
        assert image.mode == "RGB" and text.startswith("a ") and meta["label"] in text
        shards = sorted((out / split).glob("shard-*.tar"))
        assert len(shards) == -(-counts[split] // 8)
        # the shards are plain WebDataset: its own reader sees the same samples
        read = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
        assert len(read) == counts[split]
        assert {"__key__", "txt", "json", "png"} <= set(read[0])
    keys = {s: keys_of(out, s) for s in ALL_SPLITS}
    assert all(len(set(k)) == len(k) for k in keys.values())
    assert not set(keys["train"]) & set(keys["val"]) and not set(keys["train"]) & set(keys["test"])
    assert not set(keys["val"]) & set(keys["test"]) and set(keys["mini_train"]) <= set(keys["train"])
    assert not list(out.rglob("*.partial"))


def fake_pairs(labels: int, per_label: int) -> list[Pair]:
    return [Pair(f"{lab:02d}{i:030d}", f"{lab}-{i}", bytes, f"caption {lab} {i}", f"label {lab}")
            for lab in range(labels) for i in range(per_label)]  # fmt: skip


def test_split_is_stratified_and_fixed_by_the_seed():
    pairs = fake_pairs(9, 10)
    splits = split_pairs(pairs, seed=5, mini_train=20)
    for split, want in (("train", 8), ("val", 1), ("test", 1)):
        assert Counter(p.label for p in splits[split]) == {f"label {lab}": want for lab in range(9)}
    assert len(splits["mini_train"]) == 20 and {p.key for p in splits["mini_train"]} <= {p.key for p in splits["train"]}
    again = split_pairs(list(reversed(pairs)), seed=5, mini_train=20)  # input order does not matter
    assert all([p.key for p in splits[s]] == [p.key for p in again[s]] for s in ALL_SPLITS)
    other = split_pairs(pairs, seed=6, mini_train=20)
    assert [p.key for p in other["test"]] != [p.key for p in splits["test"]]
    # uneven labels: totals still match the fractions exactly
    odd = Pair("f" * 32, "odd", bytes, "an odd one", "")  # no label: stratified by its caption
    uneven = split_pairs(fake_pairs(3, 7) + [odd], fractions=(0.6, 0.2, 0.2))
    assert [len(uneven[s]) for s in SPLITS] == [13, 5, 4]  # 13.2, 4.4, 4.4 by largest remainder
    with pytest.raises(BadInput, match="fractions"):
        split_pairs(pairs, fractions=(0.5, 0.1, 0.1))


class Interrupt(Exception):
    pass


def test_interrupted_prepare_resumes_without_duplicates(shapes, tmp_path):
    folder, csv_path = shapes
    out = tmp_path / "data"
    done: list[tuple[str, int]] = []

    def stop_in_val(split: str, index: int, path: Path) -> None:
        done.append((split, index))
        if split == "val":  # train is complete, val has one shard
            raise Interrupt

    with pytest.raises(Interrupt):
        prepare(out, images=folder, captions=csv_path, shard_size=4, on_shard=stop_in_val)
    assert not (out / "manifest.json").exists()  # not complete, and says so
    with pytest.raises(BadInput, match="no manifest"):
        ShardDataset(out, "train")
    first = {p: p.stat().st_mtime_ns for p in out.rglob("shard-*.tar")}
    assert len(first) == len([d for d in done if d[0] == "train"]) + 1
    (out / "test").mkdir(exist_ok=True)
    (out / "test" / ".shard-000000.tar.x.partial").write_bytes(b"half a shard")  # as a kill mid-write leaves

    result = prepare(out, images=folder, captions=csv_path, shard_size=4)
    assert result["kept_shards"] == len(first)
    total = sum(len(result["splits"][s]["shards"]) for s in ALL_SPLITS)
    assert result["written_shards"] == total - len(first)
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # kept, not rewritten
    assert not list(out.rglob("*.partial"))
    for split in ALL_SPLITS:
        keys = keys_of(out, split)
        assert len(keys) == len(set(keys)) == result["splits"][split]["samples"]

    again = prepare(out, images=folder, captions=csv_path, shard_size=4)
    assert (again["written_shards"], again["kept_shards"]) == (0, total)
    with pytest.raises(BadInput, match="other data"):  # other split settings into the same folder
        prepare(out, images=folder, captions=csv_path, shard_size=4, seed=9)
    replaced = prepare(out, images=folder, captions=csv_path, shard_size=16, seed=9, overwrite=True)
    assert replaced["kept_shards"] == 0 and replaced["samples"] == 54
    assert sum(1 for _ in read_split(out, "train")) == replaced["splits"]["train"]["samples"]


def test_tagging_table_gives_captions(tmp_path):
    from engine.catalog.tag_run import LISTING_COLUMNS, write_table

    folder = tmp_path / "photos"
    make_shapes(folder, per_class=1)
    names = sorted(p.name for p in folder.glob("*.png"))
    columns = ["image", "color", "color_confidence", "sleeve", "sleeve_confidence", *LISTING_COLUMNS, "status",
               "error"]  # fmt: skip
    rows = []
    for i, name in enumerate(names):
        rows.append({"image": name, "color": name.split("-")[0], "color_confidence": 0.9,
                     "sleeve": "uncertain" if i % 2 else "long sleeve", "sleeve_confidence": 0.2,
                     "title": f"Shirt {i}." if i < 5 else "", "status": "listed"})  # fmt: skip
    table, _ = write_table(rows, columns, tmp_path / "tags.csv")
    pairs = pairs_from_tagging(table, folder)
    by_name = {p.name: p for p in pairs}
    assert by_name[names[0]].text == "Shirt 0. blue, long sleeve" and by_name[names[0]].label == "blue"
    assert by_name[names[1]].text == "Shirt 1. blue"  # the uncertain attribute is left out
    assert by_name[names[6]].text == "red, long sleeve"
    with pytest.raises(BadInput, match=r"^9 usable pairs are too few: .* at least 17 pairs \(8 more\)$"):
        prepare(tmp_path / "data", tagging=table, images=folder)  # 80/10/10 would hold out 1 + 1: no recall
    assert not (tmp_path / "data" / "manifest.json").exists()
    result = prepare(tmp_path / "data", tagging=table, images=folder, fractions=(0.6, 0.2, 0.2))
    assert result["samples"] == 9 and result["sources"] == {"tagging": 9}
    assert (result["splits"]["val"]["samples"], result["splits"]["test"]["samples"]) == (2, 2)
    with pytest.raises(BadInput, match="not a tagging table"):
        pairs_from_tagging(make_shapes(tmp_path / "other", per_class=1), folder)


def test_style_library_pairs(engine, tmp_path):
    library = engine.retrieval.library  # read only
    pairs = pairs_from_library(library)
    styles = library.list(include_hidden=True)
    assert len(pairs) == len(styles) >= 10
    neon = next(p for p in pairs if p.label == "Cyberpunk neon")
    assert neon.text.startswith("Cyberpunk neon. Rain-slick night skyline") and neon.text.endswith("dark, rain")
    result = prepare(tmp_path / "data", library=library, fractions=(0.5, 0.25, 0.25))
    assert result["samples"] == len(styles) and result["sources"] == {"library": len(styles)}
    assert sum(result["splits"][s]["samples"] for s in SPLITS) == len(styles)


def test_llm_caption_cleanup_keeps_the_original_on_a_bad_reply(serve, shapes, tmp_path):
    from engine.catalog.llm import OpenAIBackend

    folder, csv_path = shapes

    def script(i: int, body: dict):
        text = body["messages"][-1]["content"]
        if "red" in text:
            return 200, completion(json.dumps({"caption": text.replace("a red", "one crimson")}))
        if "green" in text:
            return 200, completion("Sure! Here is a nicer caption: green thing")  # not JSON
        return 500, {"error": {"message": "overloaded"}}  # blue: the call fails

    server = serve(script)
    clean = llm_caption_cleaner(OpenAIBackend(server.url, timeout=5))
    result = prepare(tmp_path / "data", images=folder, captions=csv_path, clean=clean)
    texts = Counter(s.text for split in SPLITS for s in read_split(tmp_path / "data", split))
    assert texts["one crimson circle"] == 6 and texts["a red circle"] == 0
    assert texts["a green circle"] == 6 and texts["a blue triangle"] == 6
    assert result["cleaned"] == 18  # the red ones
    sample = next(s for s in read_split(tmp_path / "data", "train") if s.text.startswith("one crimson"))
    assert sample.meta["original_text"].startswith("a red")
    asked = len(server.requests)
    assert asked == 9  # one request per distinct caption
    prepare(tmp_path / "data", images=folder, captions=csv_path, clean=clean)  # resumes from its cache
    assert len(server.requests) == asked
