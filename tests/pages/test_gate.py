"""Served beyond this machine, the app asks for the team password before it draws anything (ui/gate.py)."""

from __future__ import annotations

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from tests.pages.conftest import APP

PASSWORD = "correct horse battery staple"


@pytest.fixture
def on_the_network(monkeypatch, tmp_path, tiny_models):
    from tests.conftest import make_data_dir

    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(make_data_dir(tmp_path / "data", tiny_models)))
    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    yield monkeypatch
    config.set_option("server.address", before)


def test_on_the_network_without_a_password_the_app_refuses_in_one_line(on_the_network):
    on_the_network.delenv("DESIGN_STUDIO_UI_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "This Studio is served on 0.0.0.0 without a password. Set DESIGN_STUDIO_UI_PASSWORD (at least 12 "
        "characters) before `streamlit run`, or serve it on 127.0.0.1 only."
    ]
    assert not at.button and not at.text_area  # no page behind it


def test_a_short_password_is_refused_too(on_the_network):
    on_the_network.setenv("DESIGN_STUDIO_UI_PASSWORD", "short")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert len(at.error) == 1 and "without a password" in at.error[0].value


def test_the_password_opens_the_studio_and_a_wrong_one_does_not(on_the_network):
    on_the_network.setenv("DESIGN_STUDIO_UI_PASSWORD", PASSWORD)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not at.error
    assert [t.label for t in at.text_input] == ["Team password"] and not at.text_area
    at.text_input(key="ui_gate_password").input("guess")
    at.button[0].click().run()  # a form: the value and the submit go together
    assert [e.value for e in at.error] == ["Wrong password."] and not at.text_area
    at.text_input(key="ui_gate_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Studio" and at.text_area  # the Studio, with its prompt
    at.run()  # and it stays open for this session
    assert at.title[0].value == "Studio" and "Team password" not in [t.label for t in at.text_input]


def test_on_this_machine_there_is_no_gate(monkeypatch, tmp_path, tiny_models):
    from tests.conftest import make_data_dir

    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(make_data_dir(tmp_path / "data", tiny_models)))
    monkeypatch.delenv("DESIGN_STUDIO_UI_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and at.title[0].value == "Studio"
