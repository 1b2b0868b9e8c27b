"""The envelope rules, without Redis: what is valid, what a reply means."""

from __future__ import annotations

import orjson
import pytest
from pubsub_rpc import HandlerError, InvalidRequest, RemoteError, Settings, UnknownAction, protocol
from pubsub_rpc.protocol import MalformedMessage


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"x" * 2000, "exceeds"),
    ],
)
def test_decode_rejects_what_is_not_an_envelope(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        protocol.decode(raw, max_bytes=1000)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"requestId": "1"}, "action"),
        ({"action": 5, "requestId": "1"}, "action"),
        ({"action": "", "requestId": "1"}, "action"),
        ({"action": "a", "requestId": 7}, "requestId"),
        ({"action": "a", "requestId": "1", "replyTo": 3}, "replyTo"),
        ({"action": "a", "requestId": "1", "deadline": "soon"}, "deadline"),
    ],
)
def test_parse_request_names_the_bad_field(message: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        protocol.parse_request(message)


def test_seed_request_is_legacy_and_v1_is_not() -> None:
    seed = protocol.parse_request({"action": "configs", "data": None, "requestId": "r1", "source": "nodejs"})
    assert seed.legacy and seed.request_id == "r1" and seed.source == "nodejs"
    ours = protocol.parse_request(orjson.loads(protocol.encode_request("echo", 1, "r2", "python", reply_to="x.reply.1")))
    assert not ours.legacy and ours.reply_to == "x.reply.1"


def test_legacy_reply_merges_dict_result_but_envelope_keys_win() -> None:
    reply = orjson.loads(protocol.encode_result("laravel", "configs", "r1", {"locale": "en", "requestId": "evil"}, legacy=True))
    assert reply["locale"] == "en"
    assert reply["requestId"] == "r1"
    assert reply["source"] == "laravel" and reply["action"] == "configs"
    assert reply["ok"] is True and reply["result"] == {"locale": "en", "requestId": "evil"}


def test_v1_reply_is_not_merged() -> None:
    reply = orjson.loads(protocol.encode_result("laravel", "configs", "r1", {"locale": "en"}, legacy=False))
    assert "locale" not in reply and reply["result"] == {"locale": "en"}


def test_result_of_raises_the_named_error() -> None:
    with pytest.raises(UnknownAction, match="nope"):
        protocol.result_of({"ok": False, "error": {"code": "unknown_action", "message": "nope"}})
    with pytest.raises(HandlerError):
        protocol.result_of({"ok": False, "error": {"code": "handler_error", "message": "boom"}})
    with pytest.raises(RemoteError) as info:
        protocol.result_of({"ok": False, "error": {"code": "teapot", "message": "short and stout"}})
    assert info.value.code == "teapot"


def test_result_of_a_seed_era_reply_is_what_the_responder_merged_in() -> None:
    reply = {"source": "laravel", "action": "configs", "requestId": "r1", "locale": "en", "currency": "EUR"}
    assert protocol.result_of(reply) == {"locale": "en", "currency": "EUR"}


def test_push_carries_data_and_merged_keys() -> None:
    push = orjson.loads(protocol.encode_push("laravel", "configs", {"locale": "en"}))
    assert push["requestId"] is None and push["data"] == {"locale": "en"} and push["locale"] == "en"
    event = protocol.Event.from_message(push, "general")
    assert event.action == "configs" and event.data == {"locale": "en"} and event.source == "laravel"


def test_settings_from_env_casts_and_names_bad_values() -> None:
    settings = Settings.from_env(
        {"RPC_CALL_TIMEOUT": "2.5", "RPC_PRIVATE_REPLIES": "no", "GATEWAY_PORT": "9000", "RPC_CHANNEL": "app_general"}
    )
    assert settings.call_timeout == 2.5 and settings.private_replies is False and settings.gateway_port == 9000
    assert settings.request_channel == "app_general_sender"
    with pytest.raises(ValueError, match="GATEWAY_PORT"):
        Settings.from_env({"GATEWAY_PORT": "eighty"})


def test_service_defaults_yield_to_the_environment() -> None:
    assert Settings.from_env({}, source="laravel").source == "laravel"
    assert Settings.from_env({"RPC_SOURCE": "php"}, source="laravel").source == "php"
