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


def test_layouts_are_detected_and_can_be_forced(mu, tmp_path):
    ansistrano = layout(tmp_path / "a", ["20260101000000Z", "20260201000000Z"], "20260201000000Z")
    capistrano = layout(tmp_path / "c", ["20260101000000", "20260201000000"], "20260201000000", absolute=True)
    versions = layout(tmp_path / "v", ["1.9.0", "1.10.0"], "1.10.0")
    assert mu.releases.discover(str(ansistrano))["layout"] == "ansistrano"
    assert mu.releases.discover(str(capistrano))["layout"] == "capistrano"
    info = mu.releases.discover(str(versions))
    assert info["layout"] == "versions" and info["previous"] == "1.9.0"
    forced = mu.releases.discover(str(ansistrano), layout="capistrano")
    assert forced["layout"] == "capistrano" and forced["detected_layout"] == "ansistrano"
    with pytest.raises(mu.releases.ReleaseError, match="unknown layout"):
        mu.releases.discover(str(versions), layout="git")


def test_a_versions_layout_ignores_directories_that_are_not_versions(mu, tmp_path):
    app = layout(tmp_path, ["1.9.0", "1.10.0", "backup-old"], "1.10.0")
    info = mu.releases.discover(str(app))
    assert info["releases"] == ["1.9.0", "1.10.0"] and info["previous"] == "1.9.0"


def test_capistrano_rollback_appends_the_revisions_log_line(mu, tmp_path):
    app = layout(tmp_path, ["20260101000000", "20260201000000"], "20260201000000", absolute=True)
    (app / "revisions.log").write_text("Branch main (at abc) deployed as release 20260201000000 by bob\n")
    result = mu.releases.switch(str(app), "20260101000000", user="alice")
    assert result["revisions_log"] == "alice rolled back to release 20260101000000"
    assert (app / "revisions.log").read_text().splitlines()[-1] == "alice rolled back to release 20260101000000"
    assert os.readlink(app / "current") == str(app / "releases" / "20260101000000")
    # Idempotent: no second line when nothing switches.
    mu.releases.switch(str(app), "20260101000000", user="alice")
    assert len((app / "revisions.log").read_text().splitlines()) == 2


def test_remove_rolled_back_deletes_the_bad_release_only_when_asked(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "1.1.0"], "1.1.0")
    result = mu.releases.switch(str(app), "1.0.0", remove_rolled_back=True)
    assert result["removed"] == "1.1.0" and not (app / "releases" / "1.1.0").exists()
    assert (app / "shared" / "data").read_text() == "keep me"


def test_the_lock_refuses_another_run_names_its_holder_and_is_reentrant(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "1.1.0"], "1.1.0")
    assert mu.releases.acquire_lock(str(app), "run-1", operator="bob") is True
    assert mu.releases.acquire_lock(str(app), "run-1", operator="bob") is False
    with pytest.raises(mu.releases.ReleaseError, match="locked by run run-1 by bob"):
        mu.releases.switch(str(app), "1.0.0", run_id="run-2", lock=True)
    assert os.readlink(app / "current") == "./releases/1.1.0"
    info = mu.releases.discover(str(app), run_id="run-2")
    assert info["lock"]["run_id"] == "run-1" and "run-1" in info["lock_problem"]
    assert mu.releases.discover(str(app), run_id="run-1")["lock_problem"] is None
    assert mu.releases.release_lock(str(app), "run-2") is False
    assert mu.releases.release_lock(str(app), "run-1") is True
    assert mu.releases.read_lock(str(app)) is None


def test_a_stale_lock_is_reported_with_its_holder_and_broken_only_when_asked(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "1.1.0"], "1.1.0")
    mu.releases.acquire_lock(str(app), "old-run", operator="carol")
    os.utime(app / ".rollback.lock", (1, 1))
    with pytest.raises(mu.releases.ReleaseError, match=r"stale lock .*old-run by carol"):
        mu.releases.switch(str(app), "1.0.0", run_id="new-run", lock=True)
    result = mu.releases.switch(str(app), "1.0.0", run_id="new-run", lock=True, break_stale_lock=True)
    assert result["locked"] is True and mu.releases.read_lock(str(app))["run_id"] == "new-run"


def test_the_deployment_snapshot_records_config_and_is_preferred_by_discovery(mu, tmp_path):
    app = layout(tmp_path, ["1.0.0", "1.1.0", "1.2.0"], "1.2.0")
    conf = tmp_path / "app.conf"
    conf.write_text("v = 1.2.0\n")
    # The deploy of 1.2.0 replaced 1.0.0 (1.1.0 was a hotfix branch never live here).
    result = mu.releases.take_snapshot(
        str(app), config_files=[str(conf)], db_revision="a1", flags=["f"], previous="1.0.0"
    )
    assert result["changed"] and result["release"] == "1.2.0"
    snap = app / "snapshots" / "1.2.0" / "files" / str(conf).lstrip("/")
    assert snap.read_text() == "v = 1.2.0\n"
    record = mu.releases.read_record(str(app), "1.2.0")
    assert record["previous"] == "1.0.0" and record["db_revision_before"] == "a1" and record["flags"] == ["f"]
    again = mu.releases.take_snapshot(
        str(app), config_files=[str(conf)], db_revision="a1", flags=["f"], previous="1.0.0"
    )
    assert again["changed"] is False
    info = mu.releases.discover(str(app))
    assert info["previous"] == "1.0.0" and info["previous_source"] == "deploy record"
    # A recorded previous release that was rolled back since is not used: discovery again.
    (app / "releases" / "1.0.0" / "ROLLED_BACK").write_text("{}")
    info = mu.releases.discover(str(app))
    assert info["previous"] == "1.1.0" and info["previous_source"] == "discovered"
