"""The model doctor over HTTP: a served engine answers `about.doctor` with the same report as in process, from its
own machine (its folders named as callers see them), and a remote engine reads it typed."""

from __future__ import annotations

import httpx

from engine.api import DoctorReport
from engine.remote import RemoteEngine
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_doctor_over_http_is_the_engines_own_report(server_engine):
    local = server_engine.about.doctor()
    with Server(server_engine) as srv:
        remote = RemoteEngine(srv.url, TOKEN).about.doctor()
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            body = http.post("/api/about/doctor", headers=AUTH, json={})
            refused = http.post("/api/about/doctor", json={})  # no token: no report
    assert isinstance(remote, DoctorReport) and remote == local
    assert remote.ok and remote.profile == "tiny" and remote.summary == "models: all present"
    assert {m.name for m in remote.models} >= {"base", "controlnet-canny", "ip-adapter", "clip", "taesd", "sam2"}
    assert body.status_code == 200 and body.json()["ok"] is True
    assert str(server_engine.data_dir) not in body.text  # its folders as callers see them, never its own paths
    assert refused.status_code == 401
