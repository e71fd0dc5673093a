"""Where the key and base URL come from, and that the key never shows."""

import pytest

from shark_nb import ValidationError, config


@pytest.fixture(autouse=True)
def _no_session_key():
    config.clear_key()
    yield
    config.clear_key()


def test_no_key_means_offline():
    s = config.resolve()
    assert s.offline and s.key is None and s.base_url == config.OFFLINE_BASE_URL


def test_env_key_and_base_url(monkeypatch):
    monkeypatch.setenv("SHARK_API_KEY", "sk-test-123")
    monkeypatch.setenv("SHARK_BASE_URL", "https://example.test/api/v1/")
    s = config.resolve()
    assert not s.offline and s.key.reveal() == "sk-test-123" and s.base_url == "https://example.test/api/v1"


def test_shark_offline_wins_over_a_key(monkeypatch):
    monkeypatch.setenv("SHARK_API_KEY", "sk-test-123")
    monkeypatch.setenv("SHARK_OFFLINE", "1")
    assert config.resolve().offline


def test_set_key_is_used_and_never_shown():
    config.set_key("sk-from-getpass")
    s = config.resolve()
    assert s.key.reveal() == "sk-from-getpass"
    assert "sk-from" not in repr(s) and "sk-from" not in str(s.key)


def test_explicit_offline_false_without_key_is_a_clear_error():
    with pytest.raises(ValidationError, match="api_key"):
        config.resolve(offline=False)


@pytest.mark.parametrize("key", ["sk-abc\n", " sk-abc", "sk abc", "sk-\tabc", "", "sk-é"])
def test_bad_keys_are_refused_without_quoting_them(key):
    with pytest.raises(ValidationError) as info:
        config.check_key(key)
    if key.strip():
        assert key.strip() not in str(info.value)
    assert "api_key" in str(info.value)


@pytest.mark.parametrize("url, ok", [
    ("https://shark.ai/api/v1", True),
    ("http://127.0.0.1:8765/api/v1", True),
    ("http://localhost:8765/api/v1", True),
    ("http://[::1]:8765/api/v1", True),
    ("http://shark.ai/api/v1", False),
    ("http://10.0.0.5/api/v1", False),
    ("ftp://shark.ai/api/v1", False),
    ("https://user:pw@shark.ai/api/v1", False),
    ("shark.ai/api/v1", False),
    ("", False),
])
def test_base_url_must_be_https_except_on_loopback(url, ok):
    if ok:
        assert config.check_base_url(url) == url
    else:
        with pytest.raises(ValidationError, match="base_url"):
            config.check_base_url(url)
