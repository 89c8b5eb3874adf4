"""History's gallery in the engine: a star kept on a run (across engines on one data folder, and in a database an
older version made), and the filters the gallery lists by."""

from __future__ import annotations

import json
import sqlite3

import pytest

from engine.errors import NotFound
from engine.history import History
from engine.schema import GenerateRequest
from tests.conftest import make_data_dir, make_engine


def render(engine, prompt: str, **kw) -> str:
    values = {"prompt": prompt, "size": 64, "steps": 2, "seed": 3, "use_style": False}
    return engine.generate(GenerateRequest.build(**{**values, **kw})).run_id


def test_a_star_is_kept_by_the_next_engine_on_the_same_data_folder(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    first = make_engine(data)
    kept, other = render(first, "a walnut desk"), render(first, "a steel stool")
    assert first.history.get(kept).starred is False
    record = first.history.star(kept)
    assert record.id == kept and record.starred is True
    assert [r.id for r in first.history.list(starred=True)] == [kept]
    first.close()

    second = make_engine(data)  # as a new process would: nothing carried over but the data folder
    assert second.history.get(kept).starred is True and second.history.get(other).starred is False
    assert [r.id for r in second.history.list(starred=True)] == [kept]
    assert {r.id: r.starred for r in second.history.list()} == {kept: True, other: False}
    assert second.history.star(kept, starred=False).starred is False
    assert second.history.list(starred=True) == []
    with pytest.raises(NotFound, match="no run 'nope'"):
        second.history.star("nope")
    second.close()
    assert make_engine(data).history.get(kept).starred is False


def test_the_gallery_filters_by_words_style_star_and_run_set(fresh_engine):
    style = fresh_engine.styles.list()[0].name
    chair = render(fresh_engine, "A Red Chair by the window", batch="set-a", label="x")
    lamp = render(fresh_engine, "a brass lamp", style=style, use_style=True, batch="set-a", label="y")
    sofa = render(fresh_engine, "a red sofa", batch="set-b")
    history = fresh_engine.history
    assert [r.id for r in history.list()] == [sofa, lamp, chair]  # newest first
    assert [r.id for r in history.list(text="red")] == [sofa, chair]
    assert [r.id for r in history.list(text="red CHAIR")] == [chair]  # every word, case aside
    assert history.list(text="%") == [] and history.list(text="_") == []  # no wildcards
    assert [r.id for r in history.list(style=style)] == [lamp]
    assert [r.id for r in history.list(batch="set-a")] == [chair, lamp]  # a batch: whole, oldest first
    history.star(chair)
    history.star(sofa)
    assert [r.id for r in history.list(starred=True)] == [sofa, chair]
    assert [r.id for r in history.list(batch="set-a", starred=True)] == [chair]
    assert [r.id for r in history.list(starred=True, text="sofa")] == [sofa]
    assert history.facets() == {"batches": ["set-b", "set-a"], "styles": [style]}


def test_a_history_an_older_version_made_gets_the_star_column(tmp_path):
    path = tmp_path / "history.sqlite"
    meta = {"created_at": "2025-01-01T00:00:00+00:00", "prompt": "an old render", "styles": []}
    with sqlite3.connect(path) as db:  # the runs table before stars
        db.execute(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, kind TEXT NOT NULL, prompt TEXT NOT "
            "NULL, negative_prompt TEXT NOT NULL DEFAULT '', seeds TEXT NOT NULL, profile TEXT NOT NULL, sketch_hash "
            "TEXT, style_ids TEXT NOT NULL, outputs TEXT NOT NULL, seconds REAL NOT NULL, metadata TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            ("old", meta["created_at"], "text", meta["prompt"], "", "[1]", "tiny", None, "[]", "[]", 1.0,
             json.dumps(meta)),
        )  # fmt: skip
    db.close()
    store = History(path)
    assert [(r["id"], r["starred"]) for r in store.list()] == [("old", False)]
    assert store.star("old") and History(path).get("old")["starred"] is True
    new = {**meta, "created_at": "2025-01-02T00:00:00+00:00", "kind": "text", "seeds": [2], "profile": "tiny",
           "timings": {"total": 1.0}}  # fmt: skip
    History(path).add("new", new, [])  # a second store (another process) finds the column there
    assert [(r["id"], r["starred"]) for r in History(path).list()] == [("new", False), ("old", True)]
