"""Release discovery and the atomic switch on a real filesystem."""

import os

import pytest


def layout(root, releases, live, absolute=False):
    app = root / "app"
    for name in releases:
        (app / "releases" / name).mkdir(parents=True)
        (app / "releases" / name / "REVISION").write_text(name)
    (app / "shared").mkdir()
    (app / "shared" / "data").write_text("keep me")
    link = str(app / "releases" / live) if absolute else f"./releases/{live}"
    os.symlink(link, app / "current")
    return app


def test_versions_are_ordered_as_versions_not_strings(mu):
    names = ["1.10.0", "1.9.0", "1.2.3", "v2.0.0"]
    assert sorted(names, key=mu.releases.sort_key) == ["1.2.3", "1.9.0", "1.10.0", "v2.0.0"]


def test_live_release_is_the_link_not_the_newest_mtime(mu, tmp_path):
    app = layout(tmp_path, ["20260101000000Z", "20260201000000Z", "20260301000000Z"], "20260201000000Z")
    os.utime(app / "releases" / "20260101000000Z", (9999999999, 9999999999))
    info = mu.releases.discover(str(app))
    assert info["live"] == "20260201000000Z"
    assert info["previous"] == "20260101000000Z"
    assert info["layout"] == "ansistrano"


def test_unfinished_and_rolled_back_releases_are_skipped(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "1.1.0", "1.2.0", "1.3.0"], "1.3.0")
    (app / "releases" / "1.2.0" / "DEPLOY_UNFINISHED").write_text("")
    (app / "releases" / "1.1.0" / "ROLLED_BACK").write_text("{}")
    info = mu.releases.discover(str(app))
    assert info["previous"] == "1.0.0"
    assert info["skipped"] == ["1.1.0", "1.2.0"]


@pytest.mark.parametrize("absolute", [False, True])
def test_switch_keeps_the_link_style_marks_and_keeps_the_bad_release(mu, tmp_path, absolute):
    app = layout(tmp_path, ["20260101000000", "20260201000000"], "20260201000000", absolute=absolute)
    result = mu.releases.switch(str(app), "20260101000000", run_id="r1", reason="test")
    link = os.readlink(app / "current")
    assert link == (str(app / "releases" / "20260101000000") if absolute else "./releases/20260101000000")
    assert result["changed"] and result["from"] == "20260201000000"
    assert (app / "releases" / "20260201000000" / "ROLLED_BACK").is_file()
    assert (app / "shared" / "data").read_text() == "keep me"
    # A second switch to the same target changes nothing.
    assert mu.releases.switch(str(app), "20260101000000")["changed"] is False


def test_config_outside_the_release_comes_back_from_the_snapshot(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "2.0.0"], "2.0.0")
    conf = tmp_path / "etc" / "app.conf"
    conf.parent.mkdir()
    conf.write_text("new = 1\n")
    snap = app / "snapshots" / "1.0.0" / "files" / str(conf).lstrip("/")
    snap.parent.mkdir(parents=True)
    snap.write_text("old = 1\n")
    check = mu.releases.switch(str(app), "1.0.0", config_files=[str(conf)], check_mode=True)
    assert check["config_restored"] == [str(conf)] and conf.read_text() == "new = 1\n"
    assert os.readlink(app / "current") == "./releases/2.0.0"
    mu.releases.switch(str(app), "1.0.0", config_files=[str(conf)])
    assert conf.read_text() == "old = 1\n"
    assert (tmp_path / "etc" / "app.conf.rolled-back-2.0.0").read_text() == "new = 1\n"


def test_a_missing_snapshot_refuses_before_anything_changes(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "2.0.0"], "2.0.0")
    with pytest.raises(mu.releases.ReleaseError, match="no snapshot"):
        mu.releases.switch(str(app), "1.0.0", config_files=[str(tmp_path / "nope.conf")])
    assert os.readlink(app / "current") == "./releases/2.0.0"


def test_a_current_that_is_not_a_link_is_explained(mu, tmp_path):
    (tmp_path / "app" / "releases").mkdir(parents=True)
    (tmp_path / "app" / "current").mkdir()
    with pytest.raises(mu.releases.ReleaseError, match="not a symlink"):
        mu.releases.discover(str(tmp_path / "app"))
