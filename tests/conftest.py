import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test touches the user's real ~/.shark_nb or a real key."""
    monkeypatch.setenv("SHARK_NB_HOME", str(tmp_path / "shark_home"))
    monkeypatch.delenv("SHARK_API_KEY", raising=False)
    monkeypatch.delenv("SHARK_BASE_URL", raising=False)
    monkeypatch.delenv("SHARK_OFFLINE", raising=False)
    monkeypatch.setenv("SHARK_SIM_LATENCY", "0.01")
    yield


@pytest.fixture(autouse=True)
def _fresh_price_book():
    """Prices learned from one test's calls must not become another test's estimates."""
    from shark_nb.schemas import PRICE_BOOK

    PRICE_BOOK.clear()
    yield
    PRICE_BOOK.clear()


@pytest.fixture(autouse=True)
def _fresh_limiters():
    """A limit learned (or a pause started) by one test's 429s must not slow another test."""
    from shark_nb import limiter

    limiter.reset_all()
    yield
    limiter.reset_all()
