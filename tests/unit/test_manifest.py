"""Manifest errors are one sentence that names the field and the fix."""

import pytest


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"version": "../../etc"}, "is not a release name"),
        ({"version": "1.0; rm -rf /"}, "is not a release name"),
        ({"version": "x" * 300}, "is not a release name"),
        ({"flags": {"backend": "flagd", "file": "/f.json", "names": ["ok", "bad/../name"]}}, "is not a flag key"),
        ({"flags": {"backend": "carrier-pigeon", "file": "/f", "names": ["a"]}}, "flags.backend"),
        ({"flags": {"backend": "flagd", "file": "relative.json", "names": ["a"]}}, "absolute path"),
        ({"database": {"config": "/a.ini", "url": "sqlite://"}}, "target_revision is missing"),
        ({"infrastructure": {"path": "/etc/lb.conf", "snapshot": "/etc/lb.conf"}}, "{version}"),
        ({"validation": {"retries": "many"}}, "validation.retries"),
        ({"environment": "../prod"}, "environment '../prod' is not a name"),
        ({"environment": ["production"]}, "environment"),
        ({"unknown_section": 1}, "unknown manifest key"),
        (["a", "list"], "must be a mapping"),
    ],
)
def test_bad_manifests_are_refused_with_one_sentence(mu, data, fragment):
    with pytest.raises(mu.manifest.ManifestError) as err:
        mu.manifest.parse_manifest(data)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_the_file_form_and_the_bare_form_are_the_same(mu):
    body = {"app": "shop", "version": "1.2.3"}
    assert mu.manifest.parse_manifest({"rollback_manifest": body}) == mu.manifest.parse_manifest(body)
