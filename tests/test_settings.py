"""Settings: the API key's sources, the base URL's, and range checks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batchgen.errors import UsageError
from batchgen.settings import DEFAULT_BASE_URL, Settings, load_api_key, resolve_base_url


def test_key_from_file_wins_over_the_environment(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("AIMLAPI_KEY", "from-env")
    assert load_api_key(key_file) == "from-file"
    assert load_api_key(None) == "from-env"


def test_missing_or_empty_key_is_a_usage_error_without_the_key(tmp_path):
    with pytest.raises(UsageError, match="AIMLAPI_KEY"):
        load_api_key(None)
    empty = tmp_path / "key"
    empty.write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        load_api_key(empty)


def test_base_url_from_flag_then_environment_then_default(monkeypatch):
    assert resolve_base_url(None) == DEFAULT_BASE_URL
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://127.0.0.1:9/")
    assert resolve_base_url(None) == "http://127.0.0.1:9"
    assert resolve_base_url("https://proxy.test") == "https://proxy.test"
    with pytest.raises(UsageError):
        resolve_base_url("ftp://x")


def test_key_is_kept_out_of_repr():
    assert "secret" not in repr(Settings(api_key="secret"))


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"rpm": 0}, {"max_retries": -1}, {"grace": -1}])
def test_out_of_range_settings_are_refused(bad):
    with pytest.raises(UsageError):
        Settings(api_key="k", **bad)


@pytest.mark.parametrize("bad", ["two words", "line\nbreak", "tab\there", "ключ"])
def test_a_mangled_key_is_refused_without_showing_it(monkeypatch, bad):
    monkeypatch.setenv("AIMLAPI_KEY", bad)
    with pytest.raises(UsageError) as caught:
        load_api_key(None)
    assert bad not in str(caught.value)


def test_a_library_callers_float_budget_becomes_an_exact_decimal():
    settings = Settings(api_key="k", max_usd=5.1, max_credits=100, max_usd_per_day=2.5)
    assert (settings.max_usd, settings.max_credits, settings.max_usd_per_day) == (
        Decimal("5.1"),
        Decimal("100"),
        Decimal("2.5"),
    )
