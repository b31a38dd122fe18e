import pytest

from cluster import locations


def test_data_root_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("XALIGN_DATA", raising=False)
    root = locations.data_root()
    assert (root / "ntrex128").is_dir()
    monkeypatch.setenv("XALIGN_DATA", str(tmp_path))
    assert locations.data_root() == tmp_path.resolve()
    assert locations.resolve_data_path("ntrex128/eng_Latn.txt") == tmp_path.resolve() / "ntrex128/eng_Latn.txt"


def test_missing_data_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("XALIGN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(locations.DataNotFoundError, match=r"XALIGN_DATA points to .*nowhere"):
        locations.data_root()
    assert locations.data_root(required=False) is None


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("XALIGN_CACHE", str(tmp_path / "c"))
    assert locations.models_cache() == tmp_path / "c" / "models"
    assert (tmp_path / "c" / "models").is_dir()
