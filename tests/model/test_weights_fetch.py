"""The weight fetch against a local imitation of the Hugging Face hub (tests/helpers/fakehub.py): what is fetched,
resume, retries, the deadline, verification, one-line errors, and files readable by another user."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from model import create_detector
from model.config import load_config
from model.weights import heads_path, save_heads
from model.weights.cli import main
from model.weights.fetching import fetch
from model.weights.hub import FetchError, HubOptions, part_path
from tests.helpers.fakehub import CLIP, DINO, fake_hub, publish, tiny_backbone_bytes
from tests.helpers.processes import REPO

FAST = {"backoff_s": 0.01, "read_timeout_s": 5.0}


@pytest.fixture(scope="module")
def published() -> dict[str, bytes]:
    return tiny_backbone_bytes()


@pytest.fixture
def hub():
    with fake_hub() as hub:
        yield hub


def options(hub, **overrides) -> HubOptions:
    return HubOptions(endpoint=hub.url, **{**FAST, **overrides})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Files other than the manifest: downloads, parts, temporaries."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")


# --- what is fetched, and in which order ------------------------------------------------------------------------


def test_training_free_fetches_dinov2_only_and_loads_it(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    paths = fetch("tinyfile", tmp_path, options=options(hub))
    assert paths == [tmp_path / "tinyfile/dino.safetensors"]
    assert paths[0].read_bytes() == published["dino"], "the published bytes, not a re-saved copy"
    assert (tmp_path / "tinyfile/dino.safetensors.sha256").read_text().split()[0] == sha(published["dino"])
    assert not any(CLIP["repo"] in path for _, path, _ in hub.requests), "CLIP is not needed training-free"
    assert leftovers(tmp_path) == ["tinyfile/dino.safetensors", "tinyfile/dino.safetensors.sha256"]
    config = load_config("tiny", name="tinyfile", random_weights=False)
    detector = create_detector(config, weights_dir=tmp_path, device="cpu")
    assert detector.mode == "training-free" and not detector.random_weights


@pytest.mark.parametrize("why", ["heads present", "--with-clip"])
def test_clip_is_fetched_for_full_mode_or_when_asked_and_after_dinov2(hub, published, tmp_path, why):
    publish(hub, tmp_path, published)
    if why == "heads present":
        heads = create_detector("tiny", device="cpu", heads_file="random").network.heads
        save_heads(heads, heads_path(tmp_path, "tinyfile"), {"config": "tinyfile"})
    paths = fetch("tinyfile", tmp_path, with_clip=why == "--with-clip", options=options(hub))
    assert [p.name for p in paths] == ["dino.safetensors", "clip.safetensors"]
    heads_of = [path.split("/")[2] for method, path, _ in hub.requests if method == "HEAD"]
    assert heads_of == [DINO["repo"].split("/")[1], CLIP["repo"].split("/")[1]], "DINOv2 first"
    assert paths[1].read_bytes() == published["clip"]


def test_present_files_are_not_downloaded_again_and_a_corrupt_one_is_repaired(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    fetch("tinyfile", tmp_path, options=options(hub))
    hub.requests.clear()
    fetch("tinyfile", tmp_path, options=options(hub))
    assert hub.requests == [], "verified files stay"
    path = tmp_path / "tinyfile/dino.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    fetch("tinyfile", tmp_path, options=options(hub))
    assert path.read_bytes() == published["dino"]
    path.write_bytes(published["dino"][:1000])  # truncated (a copy cut short)
    fetch("tinyfile", tmp_path, options=options(hub))
    assert path.read_bytes() == published["dino"]


# --- the network: resume, retries, deadline --------------------------------------------------------------------------


def test_a_reset_mid_file_resumes_from_the_bytes_already_there(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    hub.faults.reset_after = 5000
    fetch("tinyfile", tmp_path, options=options(hub))
    assert hub.cdn_gets() == ["", "bytes=5000-"]
    assert (tmp_path / "tinyfile/dino.safetensors").read_bytes() == published["dino"]
    assert leftovers(tmp_path) == ["tinyfile/dino.safetensors", "tinyfile/dino.safetensors.sha256"]


def test_a_killed_run_resumes_from_its_part_file(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    dest = tmp_path / "tinyfile/dino.safetensors"
    dest.parent.mkdir(parents=True)
    part_path(dest, sha(published["dino"])).write_bytes(published["dino"][:7000])  # what a killed run left
    (dest.parent / f".{dest.name}.0123abcd.tmp").write_bytes(b"debris of an older fetch")
    fetch("tinyfile", tmp_path, options=options(hub))
    assert hub.cdn_gets() == ["bytes=7000-"]
    assert dest.read_bytes() == published["dino"]
    assert leftovers(tmp_path) == ["tinyfile/dino.safetensors", "tinyfile/dino.safetensors.sha256"]


def test_server_errors_are_retried_with_backoff_then_given_up(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    hub.faults.fail_status = [503, 502]
    fetch("tinyfile", tmp_path, options=options(hub))
    assert len(hub.cdn_gets()) == 3
    (tmp_path / "tinyfile/dino.safetensors").unlink()
    hub.faults.fail_status = [503] * 10
    with pytest.raises(FetchError) as err:
        fetch("tinyfile", tmp_path, options=options(hub, retries=2))
    assert "HTTP 503" in str(err.value) and "3 tries" in str(err.value)


def test_a_cdn_that_refuses_connections_is_retried_once_the_hub_answered(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    with fake_hub() as gone:
        hub.cdn_url = gone.url  # closed once the block ends
    with pytest.raises(FetchError) as err:
        fetch("tinyfile", tmp_path, options=options(hub, retries=1))
    assert "connection failed" in str(err.value) and "2 tries" in str(err.value), str(err.value)
    assert sum(method == "HEAD" for method, _, _ in hub.requests) == 2


def test_a_stalled_hub_hits_the_deadline_and_the_next_fetch_resumes(hub, published, tmp_path):
    publish(hub, tmp_path, published)
    hub.faults.stall_after = 3000
    with pytest.raises(FetchError) as err:
        fetch("tinyfile", tmp_path, options=options(hub, deadline_s=1.0))
    message = str(err.value)
    assert "\n" not in message and "deadline of 1 s" in message and "kept in" in message, message
    assert "timm/vit_small_patch14_dinov2.lvd142m/model.safetensors" in message
    hub.release()
    fetch("tinyfile", tmp_path, options=options(hub))
    assert hub.cdn_gets()[-1] == "bytes=3000-"
    assert (tmp_path / "tinyfile/dino.safetensors").read_bytes() == published["dino"]


# --- integrity ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lie", ["pinned in the manifest", "advertised by"])
def test_a_sum_mismatch_deletes_the_download_and_says_so(hub, published, tmp_path, lie):
    wrong = "ab" * 32
    if lie == "pinned in the manifest":
        publish(hub, tmp_path, published, pins={"dino": wrong})
    else:
        publish(hub, tmp_path, published)
        hub.faults.advertise_sha256 = wrong
    with pytest.raises(FetchError) as err:
        fetch("tinyfile", tmp_path, options=options(hub))
    message = str(err.value)
    assert "sha256 mismatch" in message and lie in message and "was deleted" in message, message
    assert f"expected {wrong[:16]}" in message and sha(published["dino"])[:16] in message
    assert leftovers(tmp_path) == []


def test_a_pinned_sum_that_matches_is_what_loading_checks(hub, published, tmp_path):
    publish(hub, tmp_path, published, pins={"dino": sha(published["dino"])})
    fetch("tinyfile", tmp_path, options=options(hub))
    (tmp_path / "tinyfile/dino.safetensors.sha256").unlink()  # the pin alone verifies
    assert main(["verify", "tinyfile", "--weights-dir", str(tmp_path)]) == 0


# --- one line per failure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hubs", "expected"),
    [
        ({"dino": {**DINO, "repo": "timm/no_such_model"}}, "HTTP 404 from 127.0.0.1"),
        ({"dino": {**DINO, "filename": "nope.safetensors"}}, "has no file nope.safetensors at revision"),
    ],
)
def test_a_404_is_one_line_naming_the_repository_and_file(hub, published, tmp_path, capsys, hubs, expected):
    publish(hub, tmp_path, published, hubs=hubs)
    assert main(["fetch", "tinyfile", "--weights-dir", str(tmp_path), "--url", hub.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err and hubs["dino"]["repo"] in err and hubs["dino"]["filename"] in err
    assert "check weights/manifest.json" in err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("token", "expected"),
    [(None, "needs a login: set HF_TOKEN"), ("hf_stale", "refused the token from HF_TOKEN")],
)
def test_a_401_says_what_to_do_with_the_token(hub, published, tmp_path, capsys, monkeypatch, token, expected):
    publish(hub, tmp_path, published)
    hub.private[DINO["repo"]] = "hf_good"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no saved login
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["fetch", "tinyfile", "--weights-dir", str(tmp_path), "--url", hub.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 401" in err and expected in err and DINO["repo"] in err, err
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert main(["fetch", "tinyfile", "--weights-dir", str(tmp_path), "--url", hub.url]) == 0


@pytest.mark.parametrize(("url", "expected"), [(None, "cannot reach"), ("hf-mirror.com", "is not a hub URL")])
def test_an_unreachable_hub_or_a_bad_url_is_one_line_at_once(published, tmp_path, capsys, url, expected):
    with fake_hub() as gone:
        publish(gone, tmp_path, published)
        url = url or gone.url  # a port nothing listens on once the block ends
    assert main(["fetch", "tinyfile", "--weights-dir", str(tmp_path), "--url", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "HF_ENDPOINT" in err and "Traceback" not in err, err


def test_the_cli_prints_no_library_chatter_and_no_traceback(hub, published, tmp_path):
    publish(hub, tmp_path, published, hubs={"dino": {**DINO, "revision": "no-such-revision"}})
    hub.files.clear()  # the repository is gone too
    done = subprocess.run(
        [sys.executable, "-m", "model.weights", "fetch", "tinyfile", "--weights-dir", str(tmp_path), "--url", hub.url],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "HTTP 404" in errors[0], lines
    assert [line for line in lines if line not in errors and ": downloading " not in line] == [], lines


# --- permissions ----------------------------------------------------------------------------------------------------


@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="weights-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(code: str, detector: bool = False) -> subprocess.CompletedProcess:
    """Run `code` in python as the user `nobody`. The interpreter lives under /root (private to root), so the
    process starts as root, imports what `code` needs (with `detector`, builds a tiny one so that every module a
    load needs is loaded), and drops to nobody before `code` runs: every weight file `code` reads, it reads as
    nobody."""
    warm = (
        "from model import create_detector; from model.config import load_config; "
        "create_detector('tiny', device='cpu', heads_file='random'); "
        if detector
        else ""
    )
    prelude = (
        f"import os; from model.weights import read_state_dict; {warm}"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534); "
    )
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_fetched_files_load_as_another_user(hub, published, shared_dir):
    publish(hub, shared_dir, published)
    with_clip = fetch("tinyfile", shared_dir, with_clip=True, options=options(hub))
    for path in with_clip:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, oct(path.stat().st_mode)
    load = (
        f"d = create_detector(load_config('tiny', name='tinyfile', random_weights=False), weights_dir='{shared_dir}', "
        "device='cpu'); print(os.getuid(), d.mode)"
    )
    done = as_nobody(load, detector=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("65534 training-free")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_a_fetch_makes_private_files_of_an_older_fetch_readable(hub, published, shared_dir):
    publish(hub, shared_dir, published)
    (path,) = fetch("tinyfile", shared_dir, options=options(hub))
    path.chmod(0o600)  # as the older fetch wrote them
    hub.requests.clear()
    fetch("tinyfile", shared_dir, options=options(hub))
    assert hub.requests == [] and stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044
    done = as_nobody(f"print(len(read_state_dict('{path}')))")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_trained_heads_are_readable_by_another_user_too(shared_dir):
    heads = create_detector("tiny", device="cpu", heads_file="random").network.heads
    path = heads_path(shared_dir, "tiny")
    save_heads(heads, path, {"config": "tiny"})
    path.parent.chmod(0o755)
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, "safetensors alone writes 0600"
    done = as_nobody(f"print(len(read_state_dict('{path}')))")
    assert done.returncode == 0, done.stderr[-2000:]
