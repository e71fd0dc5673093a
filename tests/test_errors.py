"""One test per error type: the mapping from an HTTP answer to the typed error."""

import json

import pytest

import shark_nb
from shark_nb import errors


def envelope(type_, message="boom", code=None):
    err = {"message": message, "type": type_}
    if code:
        err["code"] = code
    return json.dumps({"error": err}).encode()


@pytest.mark.parametrize(
    "status, type_, cls",
    [
        (400, "invalid_request_error", errors.InvalidRequestError),
        (400, "content_moderation", errors.ContentModerationError),
        (400, "input_too_large", errors.InputTooLargeError),
        (401, "auth_error", errors.AuthenticationError),
        (402, "insufficient_credits", errors.InsufficientCreditsError),
        (404, "model_not_found", errors.ModelNotFoundError),
        (429, "rate_limit_error", errors.RateLimitError),
        (502, "provider_error", errors.ProviderError),
        (504, "timeout_error", errors.GatewayTimeoutError),
    ],
)
def test_each_documented_error_maps_to_its_class(status, type_, cls):
    err = errors.error_from_response(status, envelope(type_, "the message", code="c1"), tracing_id="t-1")
    assert type(err) is cls
    assert isinstance(err, shark_nb.SharkError)
    assert (err.status, err.type, err.code, err.tracing_id) == (status, type_, "c1", "t-1")
    assert err.message.startswith("the message")
    assert "t-1" in str(err) and str(status) in str(err)


@pytest.mark.parametrize(
    "status, cls",
    [(400, errors.InvalidRequestError), (401, errors.AuthenticationError), (402, errors.InsufficientCreditsError),
     (404, errors.ModelNotFoundError), (409, errors.ConflictError), (429, errors.RateLimitError),
     (500, errors.ProviderError), (502, errors.ProviderError), (503, errors.ProviderError),
     (504, errors.GatewayTimeoutError), (418, errors.InvalidRequestError)],
)
def test_html_proxy_page_maps_by_status_with_an_excerpt(status, cls):
    html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
    err = errors.error_from_response(status, html)
    assert type(err) is cls
    assert err.status == status
    assert "non-JSON body" in err.message and "Bad Gateway" in err.message


def test_empty_body_still_raises_the_mapped_error():
    err = errors.error_from_response(502, b"")
    assert isinstance(err, errors.ProviderError)
    assert "empty body" in err.message


def test_plain_string_error_and_unknown_type():
    err = errors.error_from_response(400, b'{"error": "prompt missing"}')
    assert isinstance(err, errors.InvalidRequestError) and err.message == "prompt missing"
    err = errors.error_from_response(400, envelope("brand_new_type", "x"))
    assert isinstance(err, errors.InvalidRequestError) and err.type == "brand_new_type"


def test_hints_tell_what_to_do():
    assert "SHARK_API_KEY" in errors.error_from_response(401, envelope("auth_error", "bad key")).message
    assert "budget" in errors.error_from_response(402, envelope("insufficient_credits", "no")).message


def test_a_key_echoed_by_the_server_is_redacted():
    key = "sk-live-abcdef0123456789"
    err = errors.error_from_response(401, envelope("auth_error", f"key {key} is not valid"), secrets=[key])
    assert key not in str(err) and key not in repr(err) and "[secure]" in err.message


def test_validation_error_is_a_value_error_naming_field_value_and_allowed():
    err = errors.ValidationError("size", "999x999", "one of '1024x1024', 'auto'")
    assert isinstance(err, ValueError) and isinstance(err, shark_nb.SharkError)
    assert "size" in str(err) and "999x999" in str(err) and "1024x1024" in str(err)


def test_every_error_class_is_exported():
    for name in errors.__all__:
        if name[0].isupper():
            assert getattr(shark_nb, name) is getattr(errors, name)


def test_a_pil_image_is_named_by_size_and_mode_not_by_its_repr():
    from PIL import Image

    err = errors.ValidationError("mask", Image.new("RGB", (1024, 768)), "a PNG with alpha")
    assert str(err).startswith("mask=<PIL image 1024x768 RGB> is not valid") and "0x" not in str(err)


@pytest.mark.parametrize("status", [400, 401, 402, 404, 429, 500, 502, 504])
@pytest.mark.parametrize("body", [b'{"detail": "Not authenticated"}', b'{"errors": [{"msg": "denied"}]}',
                                  b'[1, 2]', b'"denied"', b'{"error": 42}', b"null"])
def test_a_json_body_without_the_envelope_is_not_called_non_json(status, body):
    err = errors.error_from_response(status, body)
    assert "non-JSON" not in err.message
    assert f"HTTP {status} with a JSON body without the error envelope: " in err.message
    assert body.decode()[:10] in err.message


@pytest.mark.parametrize("body", [b"<html>401</html>", b"Unauthorized", b'{"error": {"message": "x"', b"\xff\xfe"])
def test_a_body_that_is_not_json_is_still_called_non_json(body):
    assert "with a non-JSON body: " in errors.error_from_response(401, body).message
