"""The Ray runtime helper: quiet where Ray says nothing actionable, loud where it matters."""
import logging

from eai_ray.runtime import _quiet_token_auth_notice


def test_token_auth_notice_is_dropped_but_the_auth_off_warning_is_kept(caplog):
    name = "ray._private.authentication.authentication_token_setup"
    _quiet_token_auth_notice()
    _quiet_token_auth_notice()  # idempotent: one filter
    logger = logging.getLogger(name)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled ...")
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    assert [r.getMessage()[:40] for r in caplog.records] == ["Token authentication is disabled for thi"]
