"""Loaders of the public data sets rMD17 and QM9 (course_lib.public_datasets), tested offline on
COURSE-MADE FIXTURES in the upstream layouts (tests/public_datasets_fixtures.py), written at test time."""

import shutil
import tarfile
from pathlib import Path

import numpy as np
import public_datasets_fixtures as F
import pytest
import torch

from course_lib import public_datasets as P
from course_lib.data import sha256_file
from course_lib.datasets import load_molecules


@pytest.fixture(scope="module")
def rmd17_archive(tmp_path_factory):
    return F.write_rmd17_fixture(tmp_path_factory.mktemp("rmd17_fixture"))


@pytest.fixture(scope="module")
def qm9_files(tmp_path_factory):
    return F.write_qm9_fixture(tmp_path_factory.mktemp("qm9_fixture"))


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, folder / src.name))


def _fake_download(archive_by_url, asked):
    """Stand-in for P.download_url: copy a fixture instead of using the network, remember the URL."""
    def fake(url, dest):
        asked.append(url)
        shutil.copy(archive_by_url[url], dest)
        return Path(dest)
    return fake


# ----------------------------------------------------------------------------------------------- rMD17


def test_rmd17_units_round_trip_against_course_data(rmd17_archive, tmp_path):
    """kcal/mol -> eV conversion: the loaded labels equal the course's own xTB labels they were made from."""
    archive = _copy(rmd17_archive, tmp_path)
    graphs = P.load_rmd17("aspirin", split="all", root=archive, expected_sha256=sha256_file(archive),
                          dtype=torch.float64)
    course = load_molecules("aspirin", "all", dtype=torch.float64)
    with np.load(tmp_path / "rmd17" / "npz_data" / "rmd17_aspirin.npz") as f:
        old = f["old_indices"]
        assert float(f["energies"][0]) < -2e4  # kcal/mol as upstream (xTB aspirin: -1077 eV = -24,800 kcal/mol)
    assert len(graphs) == 10
    for g in graphs:
        ref = course[int(old[int(g.frame)])]
        assert torch.equal(g.z, ref.z) and torch.allclose(g.pos, ref.pos, rtol=0, atol=1e-12)
        assert float(g.energy) == pytest.approx(float(ref.energy), rel=1e-12)
        assert torch.allclose(g.forces, ref.forces, rtol=1e-12, atol=1e-12)
    assert P.KCAL_PER_MOL == pytest.approx(0.0433641, rel=1e-6)
    g32 = P.load_rmd17("aspirin", split="test", root=archive)[0]
    assert g32.pos.dtype == torch.float32 and g32.energy.shape == (1,) and g32.forces.shape == (21, 3)


def test_rmd17_splits_from_archive_and_from_extracted_folder(rmd17_archive, tmp_path):
    extracted = tmp_path / "by_hand"
    extracted.mkdir()
    P.safe_extract(rmd17_archive, extracted)
    for root in (extracted, extracted / "rmd17"):  # the folder holding rmd17/, or rmd17/ itself
        train = P.load_rmd17("ethanol", split="train", split_index=2, root=root, download=False)
        test = P.load_rmd17("ethanol", split="test", split_index=2, root=root, download=False)
        want_train = P.read_split_file(extracted / "rmd17" / "splits" / "index_train_02.csv")
        want_test = P.read_split_file(extracted / "rmd17" / "splits" / "index_test_02.csv")
        assert [int(g.frame) for g in train] == want_train.tolist() and len(train) == 5
        assert [int(g.frame) for g in test] == want_test.tolist() and len(test) == 3
        assert not set(want_train) & set(want_test)
    tr = P.load_rmd17("ethanol", split="train", n_train=4, root=extracted, download=False)
    va = P.load_rmd17("ethanol", split="val", n_train=4, root=extracted, download=False)
    assert [int(g.frame) for g in tr + va] == P.read_split_file(extracted / "rmd17/splits/index_train_01.csv").tolist()
    # the same frames come out of the archive (extracted beside it on first use)
    archive = _copy(rmd17_archive, tmp_path / "arch")
    from_archive = P.load_rmd17("ethanol", split="test", split_index=2, root=archive,
                                expected_sha256=sha256_file(archive))
    assert (tmp_path / "arch" / "rmd17" / "npz_data").is_dir()
    assert all(torch.equal(a.pos, b.pos) and torch.equal(a.energy, b.energy) for a, b in zip(from_archive, test))
    # the checksums of the files used were recorded (trust on first use)
    assert (archive.parent / "rmd17.tar.bz2.sha256").read_text().split()[0] == sha256_file(archive)
    assert (tmp_path / "arch" / "rmd17" / "npz_data" / "rmd17_ethanol.npz.sha256").exists()


def test_rmd17_download_uses_the_real_url_and_warns_on_the_third_party_prefix(rmd17_archive, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(P, "download_url", _fake_download({u: rmd17_archive for u in P.RMD17_URLS}, asked))
    root = tmp_path / "cache"
    graphs = P.load_rmd17("malonaldehyde", root=root, expected_sha256=sha256_file(rmd17_archive))
    assert asked == ["https://figshare.com/ndownloader/files/23950376"]
    assert len(graphs) == 5 and (root / "rmd17.tar.bz2").exists()
    P.load_rmd17("malonaldehyde", root=root, download=False)  # second load: no download, recorded hashes match
    assert len(asked) == 1
    # without expected_sha256 the third-party prefix of the real archive applies: the fixture is not rMD17
    # (unverified third-party value: a warning, and no hash is recorded)
    with pytest.warns(UserWarning, match=f"starting with {P.RMD17_SHA256_PREFIX}.*load-atoms"):
        P.load_rmd17("malonaldehyde", root=tmp_path / "other")
    assert not (tmp_path / "other" / "rmd17.tar.bz2.sha256").exists()
    print("rmd17 download asked for", asked)


def test_rmd17_checksum_mismatch_after_first_use(rmd17_archive, tmp_path):
    archive = _copy(rmd17_archive, tmp_path)
    P.verify_sha256(archive, expected=sha256_file(archive))  # first use: records the hash
    with open(archive, "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match=r"checksum mismatch .*expected sha256 [0-9a-f]{64} \(recorded .*got "
                                         r"[0-9a-f]{64}.*delete"):
        P.load_rmd17("ethanol", root=archive)
    with pytest.raises(ValueError, match="expected_sha256="):
        P.load_rmd17("ethanol", root=archive, expected_sha256="0" * 64)


def test_rmd17_bad_input_errors(rmd17_archive, tmp_path):
    with pytest.raises(ValueError, match=r"unknown rMD17 molecule 'water'.*'aspirin', 'azobenzene'"):
        P.load_rmd17("water", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"download=False.*figshare.com/ndownloader/files/23950376"):
        P.load_rmd17("ethanol", root=tmp_path / "empty", download=False)
    with pytest.raises(ValueError, match="split_index"):
        P.load_rmd17("ethanol", split_index=6, root=tmp_path)
    P.safe_extract(rmd17_archive, tmp_path)
    with pytest.raises(ValueError, match="pass n_train"):
        P.load_rmd17("ethanol", split="val", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        P.load_rmd17("benzene", root=tmp_path)  # a real rMD17 molecule that the fixture does not have
    split = tmp_path / "rmd17" / "splits" / "index_test_03.csv"
    split.write_text("1\n2\nseven\n")
    split.with_name(split.name + ".sha256").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"index_test_03.csv line 3: expected one integer"):
        P.load_rmd17("ethanol", split="test", split_index=3, root=tmp_path)
    split.write_text("1\n99\n")
    split.with_name(split.name + ".sha256").unlink()
    with pytest.raises(ValueError, match=r"line 2: frame index 99 is outside \[0, 10\)"):
        P.load_rmd17("ethanol", split="test", split_index=3, root=tmp_path)
    npz = tmp_path / "rmd17" / "npz_data" / "rmd17_toluene.npz"
    np.savez(npz, nuclear_charges=np.array([6, 1]), coords=np.zeros((2, 3, 3)), energies=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['forces'\]"):
        P.load_rmd17("toluene", split="all", root=tmp_path)


# ------------------------------------------------------------------------------------------------- QM9


def test_qm9_parser_mathematica_exponents_and_units(qm9_files, tmp_path):
    archive, unchar = (_copy(p, tmp_path) for p in qm9_files)
    with tarfile.open(archive) as tar:
        text = tar.extractfile("dsgdb9nsd_000001.xyz").read().decode()
    assert "2.5*^-5" in text and "-4.*^-6" in text and text.splitlines()[1].startswith("gdb 1\t")
    gid, z, pos, props = P.parse_qm9_xyz(text, "dsgdb9nsd_000001.xyz")
    assert gid == 1 and z.tolist() == [6, 1, 1, 1, 1]
    assert pos[0].tolist() == [2.5e-5, -4.0e-6, 0.0]
    assert props[0] == pytest.approx(158.34431)  # A of CH4 (ase geometry), GHz
    graphs = P.load_qm9(root=tmp_path, target="U0", expected_sha256=sha256_file(archive), dtype=torch.float64)
    by_id = {int(g.gdb_id): g for g in graphs}
    assert sorted(by_id) == [1, 2, 4, 5, 7, 8]  # 3 and 6 are listed in uncharacterized.txt
    course = load_molecules("ethanol", "all", dtype=torch.float64)
    g = by_id[4]  # first ethanol frame: U0 = its xTB energy, written in Hartree with 6 decimals
    assert float(g.energy) == pytest.approx(float(course[0].energy), abs=2e-5)
    assert torch.allclose(g.pos, course[0].pos, atol=1e-10, rtol=0)
    assert g.y.shape == (1,) and g.props.shape == (1, 15)
    assert float(by_id[1].energy) == pytest.approx(-40.0 * P.HARTREE)
    for target, upstream in (("homo", -0.25), ("mu", 1.5), ("alpha", 20.0), ("r2", 150.0), ("Cv", 10.0)):
        got = P.load_qm9(root=tmp_path, target=target, limit=1)[0]
        assert float(got.y) == pytest.approx(upstream * P.QM9_UNITS[target][2], rel=1e-6), target
        assert "energy" not in got
    assert P.QM9_UNITS["mu"][2] == pytest.approx(0.2081943) and P.QM9_UNITS["alpha"][2] == pytest.approx(0.1481847)
    assert len(P.load_qm9(root=tmp_path, exclude_uncharacterized=False)) == 8
    assert (tmp_path / "dsgdb9nsd.xyz.tar.bz2.parsed.npz").exists()  # second and later loads read this cache


def test_qm9_uncharacterized_layout(qm9_files):
    text = qm9_files[1].read_text()
    assert "COURSE-MADE FIXTURE" in text
    assert P.parse_uncharacterized(text).tolist() == list(F.QM9_FIXTURE_UNCHARACTERIZED)
    lines = text.split("\n")  # the positional convention of other readers: 9 header lines, 1 closing rule
    assert [int(s.split()[0]) for s in lines[9:-2]] == list(F.QM9_FIXTURE_UNCHARACTERIZED)
    with pytest.raises(ValueError, match=r"line 11: expected 'index"):
        P.parse_uncharacterized(text.replace("      6", "    six"), "u.txt")
    with pytest.raises(ValueError, match="no column line"):
        P.parse_uncharacterized("3 C C C 1.0\n")


def test_qm9_extracted_folder_download_and_errors(qm9_files, tmp_path, monkeypatch):
    archive, unchar = qm9_files
    folder = tmp_path / "xyz"
    folder.mkdir()
    P.safe_extract(archive, folder)
    shutil.copy(unchar, folder)
    assert [int(g.gdb_id) for g in P.load_qm9(root=folder, download=False)] == [1, 2, 4, 5, 7, 8]
    # download path with the network replaced: both real figshare files are asked for
    asked = []
    urls = {P.QM9_URLS[0]: archive, P.QM9_UNCHARACTERIZED_URLS[0]: unchar}
    monkeypatch.setattr(P, "download_url", _fake_download(urls, asked))
    got = P.load_qm9(root=tmp_path / "cache", expected_sha256=sha256_file(archive))
    assert asked == ["https://ndownloader.figshare.com/files/3195389", "https://ndownloader.figshare.com/files/3195404"]
    assert len(got) == 6
    with pytest.warns(UserWarning, match=f"starting with {P.QM9_SHA256_PREFIX}"):
        P.load_qm9(root=tmp_path / "cache2")
    with pytest.raises(ValueError, match=r"unknown QM9 target 'energy'.*'U0'"):
        P.load_qm9(root=folder, target="energy")
    with pytest.raises(FileNotFoundError, match=r"download=False.*ndownloader.figshare.com/files/3195389"):
        P.load_qm9(root=tmp_path / "nothing", download=False)
    (folder / "uncharacterized.txt").unlink()
    with pytest.raises(FileNotFoundError, match="exclude_uncharacterized=False"):
        P.load_qm9(root=folder, download=False)
    bad = (folder / "dsgdb9nsd_000002.xyz").read_text().splitlines()
    bad[3] = "H\t0.1\t0.2"
    (folder / "dsgdb9nsd_000002.xyz").write_text("\n".join(bad) + "\n")
    with pytest.raises(ValueError, match=r"dsgdb9nsd_000002.xyz line 4: expected 'element x y z mulliken_charge'"):
        P.load_qm9(root=folder, exclude_uncharacterized=False)
    with pytest.raises(ValueError, match=r"line 2: expected 'gdb <id>' and 15 properties"):
        P.parse_qm9_xyz("1\ngdb 1\t1.0\t2.0\nC 0 0 0 0\n\n\n\n", "x.xyz")


@pytest.mark.parametrize("data_filter", [True, False], ids=["tarfile-filter", "by-hand"])
def test_safe_extract_refuses_members_outside_the_folder(tmp_path, monkeypatch, data_filter):
    import io

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with pytest.raises(ValueError, match="refusing"):
        P.safe_extract(evil, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()
    not_tar = tmp_path / "rmd17.tar.bz2"
    not_tar.write_text("not an archive")
    with pytest.warns(UserWarning, match=f"starting with {P.RMD17_SHA256_PREFIX}"):  # the checksum comes first ...
        with pytest.raises(ValueError, match="is not a tar archive"):  # ... then the format
            P.load_rmd17("ethanol", root=not_tar)
    with pytest.raises(ValueError, match="is not a tar archive"):
        P.load_rmd17("ethanol", root=not_tar, expected_sha256=sha256_file(not_tar))
