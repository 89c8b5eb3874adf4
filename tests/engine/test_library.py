"""The style library: retrieval ranks, persistence, idempotent ingest, user styles, a shared server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadInput
from tests.conftest import REPO, free_port, make_data_dir, make_engine, png

MANIFEST = json.loads((REPO / "styles_kb" / "manifest.json").read_text())


def test_ships_at_least_eight_styles_with_images_and_descriptions():
    styles = MANIFEST["styles"]
    assert len(styles) >= 8
    for s in styles:
        assert s["name"] and s["description"] and s["tags"]
        with Image.open(REPO / "styles_kb" / s["image"]) as im:
            assert min(im.size) >= 256


def test_each_shipped_image_finds_its_own_style_first_with_similarity_one(engine):
    for entry in MANIFEST["styles"]:
        with Image.open(REPO / "styles_kb" / entry["image"]) as im:
            hits = engine.retrieval.library.search_image(im.convert("RGB"), k=3)
        assert hits[0].name == entry["name"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[1].score < hits[0].score


def test_text_search_returns_k_ranked_hits_with_cosine_scores(engine):
    hits = engine.styles.search(text="neon city at night", k=5)
    assert len(hits) == 5
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_reingest_is_idempotent(fresh_engine):
    lib = fresh_engine.retrieval.library  # first open ingests the shipped styles
    ids = {s.id for s in lib.list()}
    assert len(ids) == len(MANIFEST["styles"])
    assert lib.ingest() == {"added": 0, "removed": 0, "unchanged": len(ids)}
    assert {s.id for s in lib.list()} == ids and lib.count() == len(ids)


def test_changed_image_replaces_its_entry_and_removed_entries_leave(fresh_engine, kb_copy):
    lib = fresh_engine.retrieval.library
    manifest_path = kb_copy / "manifest.json"
    lib.ingest(manifest_path)
    first, second = MANIFEST["styles"][0], MANIFEST["styles"][1]
    old_id = lib.find(first["name"]).id

    Image.new("RGB", (256, 256), (250, 10, 200)).save(kb_copy / first["image"])
    assert lib.ingest(manifest_path)["added"] == 1
    assert lib.find(first["name"]).id != old_id
    assert [s.name for s in lib.list()].count(first["name"]) == 1

    manifest = json.loads(manifest_path.read_text())
    manifest["styles"] = [s for s in manifest["styles"] if s["name"] != second["name"]]
    manifest_path.write_text(json.dumps(manifest))
    stats = lib.ingest(manifest_path)
    assert stats["removed"] == 1 and stats["added"] == 0
    with pytest.raises(BadInput, match="unknown style"):
        lib.find(second["name"])


def test_user_styles_add_search_remove(fresh_engine):
    swatch = Image.new("RGB", (300, 200), (20, 160, 90))
    info = fresh_engine.styles.add(png(swatch), "Forest green", "deep green lacquer", ["green", "lacquer"])
    assert info.source == "user" and info.tags == ["green", "lacquer"]
    assert fresh_engine.styles.search(image=png(swatch), k=1)[0].name == "Forest green"
    assert style_picture(fresh_engine, "forest green").size == (300, 200)

    with pytest.raises(BadInput, match="already exists"):
        fresh_engine.styles.add(png(swatch), "forest GREEN")
    fresh_engine.styles.remove("Forest green")
    assert "Forest green" not in [s.name for s in fresh_engine.styles.list()]


def test_shipped_styles_hide_but_do_not_delete(fresh_engine):
    name = MANIFEST["styles"][0]["name"]
    with pytest.raises(BadInput, match="ships with the studio; hide it instead"):
        fresh_engine.styles.remove(name)
    fresh_engine.styles.hide(name)
    assert name not in [s.name for s in fresh_engine.styles.list()]
    assert name in [s.name for s in fresh_engine.styles.list(include_hidden=True)]
    with Image.open(REPO / "styles_kb" / MANIFEST["styles"][0]["image"]) as im:
        hits = fresh_engine.styles.search(image=png(im), k=len(MANIFEST["styles"]))
    assert name not in [h.name for h in hits]
    # a hidden style stays hidden when the shipped library is ingested again
    fresh_engine.retrieval.library.ingest()
    assert name not in [s.name for s in fresh_engine.styles.list()]
    fresh_engine.styles.hide(name, hidden=False)
    assert name in [s.name for s in fresh_engine.styles.list()]


def test_bad_style_uploads_are_refused(fresh_engine):
    with pytest.raises(BadInput, match="not an image"):
        fresh_engine.styles.add(b"plain text", "Text")
    with pytest.raises(BadInput, match="style name"):
        fresh_engine.styles.add(png(Image.new("RGB", (8, 8))), "")


LIST_SCRIPT = """
import json, sys
from pathlib import Path
from engine.local import LocalEngine
from engine.settings import Settings
kw = json.loads(sys.argv[1])
e = LocalEngine(Settings(profile="tiny", device="cpu", **kw))
print(json.dumps([s.name for s in e.styles.list(include_hidden=True)]))
"""


def names_in_new_process(**settings) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", LIST_SCRIPT, json.dumps({k: str(v) for k, v in settings.items()})],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_library_persists_across_processes(fresh_engine):
    fresh_engine.styles.add(png(Image.new("RGB", (64, 64), (200, 120, 40))), "Burnt orange")
    names = names_in_new_process(data_dir=fresh_engine.data_dir)
    assert "Burnt orange" in names
    assert set(s["name"] for s in MANIFEST["styles"]) <= set(names)


@pytest.fixture
def chroma_server(tmp_path):
    """A real `chroma run` server on loopback, as a team would share one."""
    chroma = Path(sys.executable).with_name("chroma")
    port = free_port()
    path = tmp_path / "server-store"

    def start():
        proc = subprocess.Popen(
            [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc
            except OSError:
                time.sleep(0.3)
        proc.kill()
        raise RuntimeError("chroma server did not start")

    procs = [start()]
    yield port, lambda: procs.append(start()), procs
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def test_team_library_on_a_chroma_server_persists_across_processes_and_restarts(tmp_path, tiny_models, chroma_server):
    port, restart, procs = chroma_server
    a = make_engine(make_data_dir(tmp_path / "laptop-a", tiny_models), chroma_host="127.0.0.1", chroma_port=port)
    a.styles.add(png(Image.new("RGB", (64, 64), (10, 10, 120))), "Team navy", tags=["navy"])
    assert not (a.data_dir / "chroma").exists()  # nothing went to the embedded store

    other = make_data_dir(tmp_path / "laptop-b", tiny_models)
    assert "Team navy" in names_in_new_process(data_dir=other, chroma_host="127.0.0.1", chroma_port=port)

    procs[-1].terminate()
    procs[-1].wait(timeout=30)
    restart()
    b = make_engine(other, chroma_host="127.0.0.1", chroma_port=port)
    assert b.styles.search(image=png(Image.new("RGB", (64, 64), (10, 10, 120))), k=1)[0].name == "Team navy"
    assert np.asarray(style_picture(b, "Team navy")).mean() > 0


def test_with_every_style_hidden_search_is_empty_and_generation_runs_without_a_reference(fresh_engine, sketch_bytes):
    from engine.schema import GenerateRequest

    for style in fresh_engine.styles.list():
        fresh_engine.styles.hide(style.name)
    assert fresh_engine.styles.list() == []
    assert fresh_engine.styles.search(text="anything", k=3) == []
    result = fresh_engine.generate(GenerateRequest.build(prompt="a lamp", sketch=sketch_bytes, size=64, steps=2))
    assert result.styles == [] and result.metadata["styles"] == []


def style_picture(engine, name):
    """A style's reference image as the engine hands it out (PNG bytes) → PIL."""
    import io

    from PIL import Image

    return Image.open(io.BytesIO(engine.styles.image(name)))
