"""The secret rule for logs (qfleet.config.logs): no record of a qfleet logger, children
included, carries a secret; other libraries' records are left as they are."""

from __future__ import annotations

import logging

import numpy as np
import pennylane as qml
import pytest
from pydantic import SecretStr

from qfleet.config.logs import mask_text, remember
from qfleet.config.secrets import MASK
from qfleet.executors import LocalExecutor

TOKEN = "tok-7f3a9c1e5b2d4f60a8e1"
log = logging.getLogger("qfleet.executor.test_log_secrets")  # a child of "qfleet"


class ChattyExecutor(LocalExecutor):
    """A LocalExecutor with a token that logs it every way a careless backend might."""

    token: SecretStr | None = None

    def translate(self, tapes):
        raw = self.secret("token")
        log.debug("%s: submitting with token %s", self.label, raw)
        log.debug("request headers {'Authorization': 'Bearer %s'}", raw)
        log.debug("GET /jobs?api_key=%s&n=1", raw)
        log.info("config: %s", {"token": raw, "device": self.device})
        log.getChild("deeper").warning(f"retrying, token={raw}")
        return super().translate(tapes)


def test_a_token_in_an_executors_config_never_reaches_the_log(caplog):
    caplog.set_level(logging.DEBUG)
    ex = ChattyExecutor(token=TOKEN)
    tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.probs(wires=0)])
    [probs] = ex.run_all_circuits_sync([tape])
    np.testing.assert_allclose(probs, [0.5, 0.5])
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("qfleet")]
    assert len([m for m in messages if MASK in m]) == 5  # every careless line was logged
    assert TOKEN not in caplog.text
    assert all(TOKEN not in m for m in messages)


def test_key_value_pairs_and_bearer_tokens_are_masked_by_key():
    text = mask_text('password=hunter22 client_secret: "abc" Authorization: Bearer eyJ.x.y n=3')
    assert text == (f'password={MASK} client_secret: "{MASK}" Authorization: {MASK} n=3')


def test_known_secrets_are_masked_wherever_they_appear_but_short_ones_only_by_key():
    remember(SecretStr("a-known-secret-value"), "ab", None)
    assert mask_text("prefix-a-known-secret-value-suffix") == f"prefix-{MASK}-suffix"
    assert mask_text("ab cab") == "ab cab"  # two characters: masking them would garble logs


@pytest.mark.parametrize("name", ["qfleet", "qfleet.cluster", "qfleet.a.b.c"])
def test_every_qfleet_logger_is_covered(caplog, name):
    caplog.set_level(logging.DEBUG)
    logging.getLogger(name).debug("token=%s", "zz-plain-9911")
    assert caplog.records[-1].getMessage() == f"token={MASK}"


def test_other_libraries_records_pass_through_untouched(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("qfleetish", "urllib3.connectionpool", "root"):
        logging.getLogger(name).debug("token=%s", "zz-plain-9911")
        assert caplog.records[-1].getMessage() == "token=zz-plain-9911"
        assert caplog.records[-1].args == ("zz-plain-9911",)
