"""Paging stays on our server; responses we cannot trust are refused."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from fhirkit import fhir_json, sequence

from alliance_fhir.exceptions import ConfigError, FatalError
from alliance_fhir.fhir import BearerTokenAuth, FhirClient, RetryPolicy, Secret


def bundle(ids: list[str], next_url: str | None = None, include: str | None = None) -> dict:
    entries = [
        {"resource": {"resourceType": "Goal", "id": i}, "search": {"mode": "match"}} for i in ids
    ]
    if include:
        entries.append(
            {"resource": {"resourceType": "Patient", "id": include}, "search": {"mode": "include"}}
        )
    links = [{"relation": "self", "url": "https://fhir.example.org/fhir/Goal"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def paged_handler(pages: dict[str, dict]):
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.url.params.get("page", "1")
        return fhir_json(200, pages[key])

    return handler


def test_three_pages_relative_and_absolute_next_links(make_client) -> None:
    pages = {
        "1": bundle(["a", "b"], "Goal?page=2&_count=2", include="p1"),
        "2": bundle(["c", "d"], "https://fhir.example.org:443/fhir/Goal?page=3&_count=2"),
        "3": bundle(["e"]),
    }
    client, rec = make_client(
        paged_handler(pages), auth=BearerTokenAuth(Secret("static-token-abcdef"))
    )
    found = [r["id"] for r in client.search("Goal", {"subject": "Patient/p1", "_count": "2"})]
    assert found == ["a", "b", "c", "d", "e"]
    assert len(rec.requests) == 3
    assert [r.url.params.get("page") for r in rec.requests] == [None, "2", "3"]
    assert all(r.url.host == "fhir.example.org" for r in rec.requests)
    assert all(r.headers["Authorization"] == "Bearer static-token-abcdef" for r in rec.requests)
    assert rec.requests[1].url.path == "/fhir/Goal"


def test_search_can_include_included_resources(make_client) -> None:
    client, _ = make_client(sequence(fhir_json(200, bundle(["a"], include="p1"))))
    assert [r["id"] for r in client.search("Goal", matches_only=False)] == ["a", "p1"]


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example.com/fhir/Goal?page=2",
        "http://fhir.example.org/fhir/Goal?page=2",
        "https://fhir.example.org:8443/fhir/Goal?page=2",
        "//evil.example.com/fhir/Goal?page=2",
    ],
)
def test_next_link_to_another_origin_is_refused(make_client, foreign: str) -> None:
    client, rec = make_client(
        sequence(fhir_json(200, bundle(["a"], foreign))),
        auth=BearerTokenAuth(Secret("static-token-abcdef")),
    )
    seen: list[str] = []
    with pytest.raises(FatalError) as err:
        seen.extend(r["id"] for r in client.search("Goal"))
    assert seen == ["a"]
    assert "another origin" in str(err.value)
    assert "page=2" not in str(err.value)
    assert len(rec.requests) == 1
    assert {r.url.host for r in rec.requests} == {"fhir.example.org"}


def test_page_count_is_bounded(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, bundle(["a"], "Goal?page=again"))))
    with pytest.raises(FatalError, match="more than 3 pages"):
        list(client.iter_pages("Goal", max_pages=3))
    assert len(rec.requests) == 3


def test_oversized_response_is_refused_by_content_length(make_client) -> None:
    big = bundle([f"id{i}" for i in range(200)])
    client, _ = make_client(sequence(fhir_json(200, big)), max_response_bytes=1000)
    with pytest.raises(FatalError, match="exceeds the 1000-byte limit"):
        client.search_page("Goal")


def test_oversized_streamed_response_is_refused(make_client) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        chunks = iter([b'{"resourceType":"Bundle","entry":[' + b" " * 600] * 10)
        return httpx.Response(
            200, content=chunks, headers={"Content-Type": "application/fhir+json"}
        )

    client, _ = make_client(handler, max_response_bytes=2000)
    with pytest.raises(FatalError, match="exceeds"):
        client.search_page("Goal")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>login</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(200, content=b"{not json", headers={"Content-Type": "application/json"}),
        httpx.Response(200, content=b"[1, 2]", headers={"Content-Type": "application/fhir+json"}),
    ],
)
def test_non_json_success_is_refused(make_client, response: httpx.Response) -> None:
    client, _ = make_client(sequence(response))
    with pytest.raises(FatalError):
        client.read("Goal", "g1")


def test_wrong_resource_type_in_read_is_refused(make_client) -> None:
    client, _ = make_client(sequence(fhir_json(200, {"resourceType": "Patient", "id": "x"})))
    with pytest.raises(FatalError, match="expected a Goal"):
        client.read("Goal", "g1")


def test_redirect_is_not_followed(make_client) -> None:
    client, rec = make_client(
        sequence(httpx.Response(302, headers={"Location": "https://evil.example.com/x"}))
    )
    with pytest.raises(FatalError, match="redirects are not followed"):
        client.read("Goal", "g1")
    assert len(rec.requests) == 1


def test_request_to_absolute_foreign_url_is_refused(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, {})))
    with pytest.raises(FatalError, match="another origin"):
        client.request("GET", "https://evil.example.com/fhir/Goal")
    assert rec.requests == []


def test_invalid_ids_never_reach_the_server(make_client) -> None:
    from alliance_fhir.exceptions import InvalidInputError

    client, rec = make_client(sequence(fhir_json(200, {})))
    with pytest.raises(InvalidInputError):
        client.read("Goal", "../Patient/1")
    with pytest.raises(InvalidInputError):
        client.read("goal", "1")
    assert rec.requests == []


@pytest.mark.parametrize(
    "base",
    ["ftp://fhir.example.org", "https://user:pw@fhir.example.org/fhir", "https://h/fhir?x=1"],
)
def test_bad_base_urls_are_config_errors(base: str) -> None:
    with pytest.raises(ConfigError):
        FhirClient(base)


def test_verify_false_logs_a_warning(log_output) -> None:
    FhirClient("https://fhir.example.org/fhir", verify=False).close()
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert any(
        e["event"] == "fhir.tls_verification_disabled" and e["level"] == "warning" for e in events
    )


def test_authorization_header_cannot_be_smuggled(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, {})))
    with pytest.raises(ConfigError):
        client.request("GET", "Goal", headers={"authorization": "Bearer x"})
    assert rec.requests == []


def test_retry_policy_validates() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


def test_reset_mid_body_is_retried_for_reads(make_client) -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:

            def chunks():
                yield b'{"resourceType":"Goal",'
                raise httpx.ReadError("Connection reset by peer")

            return httpx.Response(
                200, content=chunks(), headers={"Content-Type": "application/fhir+json"}
            )
        return fhir_json(200, {"resourceType": "Goal", "id": "g1"})

    client, rec = make_client(handler)
    assert client.read("Goal", "g1").resource["id"] == "g1"
    assert len(rec.requests) == 2


def test_certificate_failure_is_fatal_not_retried(make_client) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("certificate verify failed") from exc

    client, rec = make_client(handler)
    with pytest.raises(FatalError, match="TLS certificate verification failed"):
        client.read("Goal", "g1")
    assert len(rec.requests) == 1


def test_ca_bundle_path(tmp_path) -> None:
    import certifi

    FhirClient("https://fhir.example.org/fhir", verify=certifi.where()).close()
    with pytest.raises(ConfigError):
        FhirClient("https://fhir.example.org/fhir", verify=str(tmp_path / "missing.pem"))
