"""The zarr replay buffer: the published Push-T file as it is, writing and appending, interrupted appends,
every format error (each message names the file and key), inspection, and the download/cache helpers."""

import os
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from datasets import MissingKeyError, ReplayBuffer, ReplayBufferError
from datasets import download
from datasets import inspect as rb_inspect


def make_episodes(lengths=(5, 9, 3), seed=0, image_dtype=np.uint8):
    """Small synthetic episodes: state (T, 5) f32, action (T, 2) f32, img (T, 8, 8, 3) whole numbers 0..255."""
    rng = np.random.default_rng(seed)
    return [
        {
            "state": rng.normal(size=(T, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, size=(T, 2)).astype(np.float32),
            "img": rng.integers(0, 256, size=(T, 8, 8, 3)).astype(image_dtype),
        }
        for T in lengths
    ]


def write(path, episodes, **kwargs):
    with ReplayBuffer.create(path, **kwargs) as rb:
        for ep in episodes:
            rb.add_episode(ep)
    return Path(path)


def assert_same_episodes(rb, episodes):
    assert rb.n_episodes == len(episodes)
    assert rb.episode_lengths.tolist() == [len(ep["action"]) for ep in episodes]
    for i, ep in enumerate(episodes):
        got = rb.get_episode(i)
        assert sorted(got) == sorted(ep)
        for k in ep:
            np.testing.assert_array_equal(got[k], ep[k])


# ---------------------------------------------------------------- the published Push-T file


def test_published_pusht_opens_as_it_is(pusht_zip):
    rb = ReplayBuffer.open(pusht_zip)
    assert rb.zarr_format == 2 and rb.prefix == "pusht/pusht_cchi_v7_replay.zarr"
    assert rb.keys == ["action", "img", "keypoint", "n_contacts", "state"]
    assert (rb.n_episodes, rb.n_steps) == (206, 25650)
    lengths = rb.episode_lengths
    assert lengths.sum() == 25650 and lengths.min() == 49 and lengths.max() == 246
    shapes = {k: (rb.shape(k), rb.array(k).dtype) for k in rb.keys}
    assert shapes == {
        "action": ((25650, 2), np.float32), "img": ((25650, 96, 96, 3), np.float32),
        "keypoint": ((25650, 9, 2), np.float32), "n_contacts": ((25650, 1), np.float32),
        "state": ((25650, 5), np.float32),
    }
    ep = rb.get_episode(0)
    assert ep["state"].shape == (161, 5) and ep["img"].shape == (161, 96, 96, 3)
    img = ep["img"]
    assert img.min() >= 0 and img.max() <= 255 and np.all(img == np.round(img))  # float32 whole numbers
    rb.close()


def test_published_pusht_episode_boundaries(pusht_zip):
    rb = ReplayBuffer.open(pusht_zip)
    ends = rb.episode_ends
    assert ends.dtype == np.int64 and np.all(np.diff(ends) > 0)
    slices = [rb.episode_slice(i) for i in range(rb.n_episodes)]
    assert slices[0].start == 0 and slices[-1].stop == 25650
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    assert rb.episode_slice(-1) == slices[-1]
    with pytest.raises(IndexError, match="206"):
        rb.episode_slice(206)
    # an episode read through get_episode is exactly its slice of the concatenated arrays
    state = rb.to_memory(["state"])["state"]
    for i in (0, 1, 100, 205):
        np.testing.assert_array_equal(rb.get_episode(i, ["state"])["state"], state[slices[i]])
    # consecutive episodes start where the previous one ended: the state jumps (a new initial condition)
    jumps = np.linalg.norm(np.diff(state[:, :2], axis=0), axis=1)
    assert np.median(jumps[ends[:-1] - 1]) > 5 * np.median(jumps)
    rb.close()


def test_published_float_images_load_as_uint8(pusht_zip, tmp_path):
    src = ReplayBuffer.open(pusht_zip)
    episodes = [src.get_episode(i, ["img", "state", "action"]) for i in range(2)]
    src.close()
    path = write(tmp_path / "dp_layout.zarr", episodes, zarr_format=2)  # Diffusion Policy's layout: v2, float32
    assert ReplayBuffer.open(path).array("img").dtype == np.float32
    mem = ReplayBuffer.open(path, in_memory=True)
    assert mem.in_memory and mem.array("img").dtype == np.uint8 and mem.array("state").dtype == np.float32
    np.testing.assert_array_equal(mem.get_episode(1)["img"], episodes[1]["img"].astype(np.uint8))


def test_non_integer_float_images_stay_float(tmp_path):
    episodes = make_episodes(image_dtype=np.float32)
    episodes[2]["img"] = episodes[2]["img"] / 255.0  # [0, 1] floats in the last episode
    mem = ReplayBuffer.open(write(tmp_path / "f.zarr", episodes), in_memory=True)
    assert mem.array("img").dtype == np.float32
    np.testing.assert_array_equal(mem.get_episode(2)["img"], episodes[2]["img"])
    np.testing.assert_array_equal(mem.get_episode(0)["img"], episodes[0]["img"])


# ---------------------------------------------------------------- creating, appending, reopening


@pytest.mark.parametrize("name,fmt", [("b.zarr", 3), ("b.zarr", 2), ("b.zip", 3)])
def test_create_append_reopen(tmp_path, name, fmt):
    episodes = make_episodes()
    path = write(tmp_path / name, episodes, zarr_format=fmt)
    assert path.exists() and not Path(str(path) + ".partial").exists()
    rb = ReplayBuffer.open(path)
    assert rb.zarr_format == fmt and rb.keys == ["action", "img", "state"] and rb.n_steps == 17
    assert_same_episodes(rb, episodes)
    rb.close()
    assert_same_episodes(ReplayBuffer.open(path, in_memory=True), episodes)


def test_append_to_existing_directory(tmp_path):
    episodes = make_episodes(lengths=(4, 6, 2, 7))
    path = write(tmp_path / "a.zarr", episodes[:2])
    rb = ReplayBuffer.open(path, mode="a")
    for ep in episodes[2:]:
        rb.add_episode(ep)
    rb.close()
    assert_same_episodes(ReplayBuffer.open(path), episodes)


def test_chunks_and_codec_defaults(tmp_path):
    path = write(tmp_path / "c.zarr", make_episodes(lengths=(100,)))
    rb = ReplayBuffer.open(path)
    img = rb.array("img")
    assert img.chunks == ((1 << 20) // (8 * 8 * 3), 8, 8, 3)  # ~1 MiB along time
    codec, checksum = img.compressors  # Blosc, then a CRC-32C of every chunk
    assert (codec.cname.value, codec.clevel, codec.shuffle.value) == ("zstd", 5, "noshuffle")
    assert type(checksum).__name__ == "Crc32cCodec"
    assert rb.array("state").compressors[0].shuffle.value == "shuffle"


def test_zip_cannot_be_appended_and_read_only_cannot_add(tmp_path):
    path = write(tmp_path / "z.zip", make_episodes())
    with pytest.raises(ReplayBufferError, match="z.zip.*cannot be appended"):
        ReplayBuffer.open(path, mode="a")
    with pytest.raises(ReplayBufferError, match="read-only"):
        ReplayBuffer.open(path).add_episode(make_episodes()[0])


def test_add_episode_rejects_inconsistent_episodes(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "e.zarr")
    rb.add_episode(make_episodes()[0])
    ep = make_episodes()[1]
    with pytest.raises(ReplayBufferError, match=r"e\.zarr.*missing \['img'\]"):
        rb.add_episode({"state": ep["state"], "action": ep["action"]})
    with pytest.raises(ReplayBufferError, match=r"e\.zarr.*one length"):
        rb.add_episode({**ep, "action": ep["action"][:-1]})
    with pytest.raises(ReplayBufferError, match=r"e\.zarr.*one length"):
        rb.add_episode({k: v[:0] for k, v in ep.items()})
    with pytest.raises(ReplayBufferError, match=r"e\.zarr: 'data/img' holds steps of shape \(8, 8, 3\)"):
        rb.add_episode({**ep, "img": ep["img"][:, :4]})
    with pytest.raises(ReplayBufferError, match=r"'data/img' is uint8, cannot store float"):
        rb.add_episode({**ep, "img": ep["img"].astype(np.float32)})
    assert rb.n_episodes == 1  # nothing half-written by the rejected episodes
    rb.close()
    with pytest.raises(FileExistsError, match="e.zarr"):
        ReplayBuffer.create(tmp_path / "e.zarr")


# ---------------------------------------------------------------- interrupted appends


def test_interrupted_append_leaves_earlier_episodes_readable(tmp_path):
    episodes = make_episodes(lengths=(5, 9, 3, 6))
    path = write(tmp_path / "i.zarr", episodes[:3])
    # a writer killed after writing the data arrays of episode 3 but before meta/episode_ends
    group = zarr.open_group(path, mode="r+")
    for k, v in episodes[3].items():
        arr = group["data"][k]
        n = arr.shape[0]
        arr.resize((n + len(v), *arr.shape[1:]))
        arr[n:] = v
    with pytest.warns(UserWarning, match=r"i\.zarr: 'data/\w+' has 6 steps beyond meta/episode_ends\[-1\] = 17"):
        rb = ReplayBuffer.open(path)
    assert_same_episodes(rb, episodes[:3])
    with pytest.warns(UserWarning, match="beyond"):
        assert ReplayBuffer.open(path, in_memory=True).array("state").shape == (17, 5)
    # appending again overwrites the stale tail
    with pytest.warns(UserWarning, match="beyond"):
        rb = ReplayBuffer.open(path, mode="a")
    rb.add_episode(episodes[3])
    rb.close()
    assert_same_episodes(ReplayBuffer.open(path), episodes)


def test_interrupted_episode_ends_update_is_dropped(tmp_path):
    episodes = make_episodes()
    path = write(tmp_path / "j.zarr", episodes[:2])
    ends = zarr.open_group(path, mode="r+")["meta/episode_ends"]
    ends.resize((3,))  # resized, but the new entry never written: it reads as the fill value 0
    with pytest.warns(UserWarning, match=r"j\.zarr: dropping 1 unwritten trailing entries"):
        rb = ReplayBuffer.open(path)
    assert_same_episodes(rb, episodes[:2])


# ---------------------------------------------------------------- format errors name the file and key


def test_data_shorter_than_episode_ends_is_an_error(tmp_path):
    path = write(tmp_path / "s.zarr", make_episodes())
    zarr.open_group(path, mode="r+")["data/action"].resize((10, 2))
    msg = r"s\.zarr: 'data/action' has 10 steps but meta/episode_ends\[-1\] is 17"
    with pytest.raises(ReplayBufferError, match=msg):
        ReplayBuffer.open(path)


@pytest.mark.parametrize("ends,bad", [([5, 3, 17], "episode 1 ends at 3 after 5"),
                                      ([5, 5, 17], "episode 1 ends at 5 after 5"),
                                      ([0, 5, 17], "episode 0 ends at 0 after 0")])
def test_decreasing_or_empty_episodes_are_errors(tmp_path, ends, bad):
    path = write(tmp_path / "d.zarr", make_episodes())
    zarr.open_group(path, mode="r+")["meta/episode_ends"][:] = ends
    with pytest.raises(ReplayBufferError, match=rf"d\.zarr: 'meta/episode_ends' must be strictly increasing.*{bad}"):
        ReplayBuffer.open(path)
    with pytest.raises(ReplayBufferError, match=r"<arrays>: 'meta/episode_ends'"):
        ReplayBuffer.from_arrays({"a": np.zeros(17)}, ends)


def test_missing_keys_are_errors(tmp_path):
    path = write(tmp_path / "m.zarr", make_episodes())
    rb = ReplayBuffer.open(path)
    with pytest.raises(MissingKeyError, match=r"m\.zarr: missing data keys \['keypoint'\]; available: \['action'"):
        rb.get_episode(0, ["state", "keypoint"])
    with pytest.raises(KeyError, match="keypoint"):  # also a KeyError
        rb.to_memory(["keypoint"])
    with pytest.raises(ReplayBufferError, match=r"nothing\.zarr: no 'meta/episode_ends' array found"):
        (tmp_path / "nothing.zarr").mkdir()
        ReplayBuffer.open(tmp_path / "nothing.zarr")
    with pytest.raises(FileNotFoundError, match="absent.zarr"):
        ReplayBuffer.open(tmp_path / "absent.zarr")
    g = zarr.open_group(tmp_path / "nodata.zarr", mode="w")
    g.create_array("meta/episode_ends", data=np.array([3]))
    with pytest.raises(ReplayBufferError, match=r"nodata\.zarr: missing group 'data'"):
        ReplayBuffer.open(tmp_path / "nodata.zarr")


def test_corrupt_chunk_names_file_key_and_chunk(tmp_path):
    path = write(tmp_path / "k.zarr", make_episodes(lengths=(300, 200)), chunk_bytes=100 * 8 * 8 * 3)
    rb = ReplayBuffer.open(path)
    rows = rb.array("img").chunks[0]
    assert rows == 100
    chunk = path / "data" / "img" / "c" / "2" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])  # truncated
    ep0 = rb.get_episode(1, ["state"])  # other keys and chunks still read
    assert len(ep0["state"]) == 200
    msg = (rf"k\.zarr: cannot decode 'data/img' chunk 2 \(steps {2 * rows}\.\.{3 * rows - 1}, "
           r"store key 'data/img/c/2/0/0/0'\).*corrupt or truncated")
    with pytest.raises(ReplayBufferError, match=msg):
        rb.get_episode(0)
    with pytest.raises(ReplayBufferError, match=msg):
        ReplayBuffer.open(path, in_memory=True)
    problems = rb_inspect.verify(rb)
    assert len(problems) == 1 and "chunk 2" in problems[0]


def test_corrupt_metadata_names_the_key(tmp_path):
    path = write(tmp_path / "meta.zarr", make_episodes())
    (path / "data" / "state" / "zarr.json").write_text("{not json")
    with pytest.raises(ReplayBufferError, match=r"meta\.zarr: cannot read 'data/state' \(its metadata\)"):
        ReplayBuffer.open(path)


def test_corrupt_zip_member_and_truncated_zip(pusht_zip, tmp_path):
    # flip bytes inside one image chunk of a copy of the published zip (members are stored uncompressed)
    data = bytearray(pusht_zip.read_bytes())
    with zipfile.ZipFile(pusht_zip) as zf:
        info = zf.getinfo("pusht/pusht_cchi_v7_replay.zarr/data/img/3.0.0.0")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 100: start + 600] = bytes(500)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    rb = ReplayBuffer.open(bad)
    rb.get_episode(0)  # episode 0 (steps 0..160) lies in chunk 0
    with pytest.raises(ReplayBufferError, match=r"bad\.zip: cannot decode 'data/img' chunk 3 \(steps 483\.\.643, "
                                                r"store key 'pusht/pusht_cchi_v7_replay.zarr/data/img/3.0.0.0'\)"):
        rb.get_episode(4, ["img"])
    rb.close()
    (tmp_path / "short.zip").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ReplayBufferError, match=r"short\.zip: not a zip file \(truncated or corrupt\?\)"):
        ReplayBuffer.open(tmp_path / "short.zip")


# ---------------------------------------------------------------- inspect


def test_inspect_prints_keys_shapes_chunks_and_lengths(tmp_path, capsys):
    path = write(tmp_path / "p.zip", make_episodes())
    assert rb_inspect.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "episodes: 3   steps: 17" in out and "min 3  median 5" in out and "max 9" in out
    assert "img            (17, 8, 8, 3)" in out and "uint8" in out and "blosc zstd 5 noshuffle" in out
    assert "state          (17, 5)" in out and "blosc zstd 5 shuffle" in out
    assert rb_inspect.main([str(path), "--verify"]) == 0
    assert "every chunk decodes" in capsys.readouterr().out
    assert rb_inspect.main([str(tmp_path / "none.zarr")]) == 2


def test_inspect_published_pusht(pusht_zip, capsys):
    assert rb_inspect.main([str(pusht_zip)]) == 0
    out = capsys.readouterr().out
    assert "zarr v2, zip" in out and "episodes: 206   steps: 25650" in out
    assert "min 49  median 122" in out and "max 246" in out
    assert "(161, 96, 96, 3)" in out and "blosc zstd 5 bitshuffle" in out


# ---------------------------------------------------------------- download and cache


@pytest.fixture
def fake_published(tmp_path, monkeypatch):
    """A small file standing in for pusht.zip, registered with its own sha256 and a file:// address."""
    fake = tmp_path / "src" / "pusht.zip"
    fake.parent.mkdir()
    fake.write_bytes(os.urandom(3000))
    spec = download.Published(url=fake.as_uri(), sha256=download.sha256_of(fake), filename="pusht.zip")
    monkeypatch.setitem(download.PUBLISHED, "pusht", spec)
    monkeypatch.setenv("DIFFUSION_STACK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PUSHT_ZIP", raising=False)
    return fake


def test_fetch_local_source_is_verified_and_copied(fake_published, tmp_path):
    path = download.fetch("pusht", source=fake_published)
    assert path == tmp_path / "cache" / "pusht.zip" and path.read_bytes() == fake_published.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["pusht.zip"]  # no temporary left
    assert download.resolve_pusht() == path  # from the cache, no source needed
    assert download.main(["pusht"]) == 0


def test_fetch_by_url_streams_and_renames(fake_published, tmp_path):
    path = download.fetch("pusht")  # the registered file:// address: the real download code path
    assert path.read_bytes() == fake_published.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["pusht.zip"]


def test_sha_mismatch_is_an_error_and_leaves_nothing(fake_published, tmp_path, capsys):
    wrong = tmp_path / "wrong.zip"
    wrong.write_bytes(b"not the dataset")
    with pytest.raises(download.DownloadError, match=r"wrong\.zip: sha256 [0-9a-f]{64} does not match the published"):
        download.fetch("pusht", source=wrong)
    with pytest.raises(download.DownloadError, match=r"wrong\.zip: sha256 .* does not match"):
        download.fetch("pusht", source=wrong.as_uri())
    assert not (tmp_path / "cache" / "pusht.zip").exists()
    assert [p for p in (tmp_path / "cache").iterdir()] == []
    assert download.main(["pusht", "--source", str(wrong)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_failed_connection_gives_a_clear_error(fake_published, monkeypatch):
    def refuse(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(download.PUBLISHED, "pusht", download.Published(
        url="https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip", sha256="0" * 64, filename="pusht.zip"))
    monkeypatch.setattr(download.urllib.request, "urlopen", refuse)
    with pytest.raises(download.DownloadError, match=r"could not download https://diffusion-policy\.cs\.columbia\.edu"
                                                     r"/data/training/pusht\.zip: .*name resolution.*--source PATH"):
        download.resolve_pusht(None)


def test_resolve_pusht_takes_a_path_or_the_environment(tmp_path, monkeypatch):
    buffer = write(tmp_path / "mine.zarr", make_episodes())
    assert download.resolve_pusht(buffer) == buffer
    monkeypatch.setenv("PUSHT_ZIP", str(buffer))
    assert download.resolve_pusht(None) == buffer
    with pytest.raises(FileNotFoundError, match=r"absent\.zip: no such Push-T replay buffer"):
        download.resolve_pusht(tmp_path / "absent.zip")


def test_published_file_has_the_published_sha(pusht_zip):
    assert download.verify(pusht_zip) == "8d1c5ac883b393d059bd2effc4834d8fee2259df40eab3abd670b53881915cce"
    assert download.PUBLISHED["pusht"].url == "https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip"


def test_changed_bytes_in_a_directory_chunk_are_caught_by_the_checksum(tmp_path):
    """A directory store has no checksums of its own: new buffers carry a CRC-32C per chunk (zarr v3), so 8
    flipped bytes inside an action chunk fail with the array and chunk named instead of decoding to wrong values."""
    path = tmp_path / "flipped.zarr"
    actions = np.arange(400, dtype=np.float32).reshape(200, 2)
    with ReplayBuffer.create(path) as rb:
        rb.add_episode({"action": actions, "state": np.zeros((200, 5), np.float32)})
    chunk = next(c for c in sorted((path / "data" / "action").rglob("*")) if c.is_file() and c.name != "zarr.json")
    raw = bytearray(chunk.read_bytes())
    for i in range(20, 28):
        raw[i] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    rb = ReplayBuffer.open(path)
    with pytest.raises(ReplayBufferError, match=r"flipped.zarr: cannot decode 'data/action' chunk 0 .*checksum"):
        rb.read("action")
    with pytest.raises(ReplayBufferError, match=r"flipped.zarr: .*'data/action'"):
        rb.to_memory(["action"])
    np.testing.assert_array_equal(ReplayBuffer.open(path).read("state"), np.zeros((200, 5), np.float32))
