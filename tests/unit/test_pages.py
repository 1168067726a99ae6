"""Pages of a list: limit/offset, X-Total-Count, the Link header, and bad values."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from nekzus.errors import ApiError
from nekzus.http.pages import page_of

ITEMS = list(range(25))


def links(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(", "):
        target, rel = part.split("; ")
        out[rel.removeprefix('rel="').removesuffix('"')] = target.strip("<>")
    return out


def test_a_middle_page_names_its_neighbours_and_keeps_other_parameters() -> None:
    request = make_mocked_request("GET", "/api/v1/images?dangling=true&limit=10&offset=10")
    chosen, headers = page_of(request, ITEMS)
    assert list(chosen) == list(range(10, 20))
    assert headers["X-Total-Count"] == "25"
    rels = links(headers["Link"])
    assert rels["next"] == "/api/v1/images?dangling=true&limit=10&offset=20"
    assert rels["prev"] == "/api/v1/images?dangling=true&limit=10&offset=0"
    assert rels["first"].endswith("offset=0") and rels["last"].endswith("offset=20")


def test_the_last_page_has_no_next_and_no_limit_means_everything() -> None:
    chosen, headers = page_of(make_mocked_request("GET", "/x?limit=10&offset=20"), ITEMS)
    assert list(chosen) == [20, 21, 22, 23, 24] and "next" not in links(headers["Link"])
    chosen, headers = page_of(make_mocked_request("GET", "/x"), ITEMS)
    assert list(chosen) == ITEMS and headers == {"X-Total-Count": "25"}
    chosen, headers = page_of(make_mocked_request("GET", "/x?offset=100"), ITEMS)
    assert list(chosen) == [] and headers["X-Total-Count"] == "25"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=1e3",
        "offset=-1",
        "limit=NaN",
        "limit=%EF%BC%95",
        "offset=99999999999999",
    ],
)
def test_a_bad_value_is_invalid_request_naming_the_parameter(query: str) -> None:
    with pytest.raises(ApiError) as caught:
        page_of(make_mocked_request("GET", f"/x?{query}"), ITEMS)
    assert caught.value.status == 400 and caught.value.code == "INVALID_REQUEST"
    assert repr(query.split("=")[0]) in caught.value.message
