"""Pure parts of the console: language negotiation, the sign-in throttle, chart geometry."""

from __future__ import annotations

from datetime import UTC, datetime

from kms_core.console.i18n import ZH, negotiate
from kms_core.console.pages import chart, last_months
from kms_core.console.sessions import SignInThrottle


def test_language_from_cookie_then_accept_language() -> None:
    assert negotiate("zh-CN,zh;q=0.9,en;q=0.8", None) == "zh"
    assert negotiate("en-US,zh;q=0.5", None) == "en"
    assert negotiate("fr-FR,zh;q=0.3", None) == "zh"
    assert negotiate("fr-FR", None) == "en"
    assert negotiate(None, None) == "en"
    assert negotiate("zh-CN", "en") == "en"
    assert negotiate("en", "xx") == "en"


def test_guide_terms_in_chinese() -> None:
    assert ZH["Alias"] == "别名"
    assert ZH["Protection level"] == "保护级别"
    assert ZH["Create key"] == "创建密钥"
    assert ZH["Schedule deletion"] == "计划删除密钥"


def test_throttle_doubles_after_free_failures_and_clears_on_success() -> None:
    t = SignInThrottle(free_failures=3, max_delay=4.0)
    delays = []
    for _ in range(7):
        delays.append(t.delay("a"))
        t.failed("a")
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0]
    assert t.delay("b") == 0.0
    t.succeeded("a")
    assert t.delay("a") == 0.0


def test_chart_months_and_bars() -> None:
    months = last_months(datetime(2026, 2, 10, tzinfo=UTC), 4)
    assert months == ["2025-11", "2025-12", "2026-01", "2026-02"]
    bars = chart([(m, v) for m, v in zip(months, [0, 5, 10, 0], strict=True)])
    assert [b.height for b in bars][2] == max(b.height for b in bars)
    assert bars[0].height == 0 and bars[1].height == bars[2].height / 2
    assert chart([(m, 0) for m in months]) == []
