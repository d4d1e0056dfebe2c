"""Every answer shape of the API docs parses into one Answer; anything else is malformed."""

from __future__ import annotations

import base64
import io
import json
from decimal import Decimal

import pytest
from aiohttp import web
from conftest import create_jobs, manifest, run_jobs, serving, write_jsonl
from PIL import Image

from batchgen.api.answers import error_excerpt, parse_answer
from batchgen.errors import MalformedResponse, UnrecognizedAnswer
from batchgen.store import read_status

REVE = {  # the reve/create-image page's example response
    "data": [
        {
            "url": "https://cdn.aimlapi.com/generations/phoenix/1759280291545-6280787e.png",
            "b64_json": None,
            "request_id": "rsid-f08b8f47354d688d6de93c400fdaf31c",
            "content_violation": False,
        }
    ],
    "meta": {"usage": {"tokens_used": 126000}},
}
FLUX = {  # the flux/dev/image-to-image page's example response
    "images": [
        {
            "url": "https://cdn.aimlapi.com/eagle/files/lion/x.png",
            "width": 1024,
            "height": 768,
            "content_type": "image/png",
        }
    ],
    "timings": {"inference": 2.544010079000145},
    "seed": 2819715747,
    "has_nsfw_concepts": [False],
    "prompt": "Add a bird to the foreground of the photo.",
}


def test_reve_example():
    answer = parse_answer(
        json.dumps(REVE).encode(), {"x-inference-id": "inf-1", "x-aimlapi-usd-spent": "0.04"}
    )
    assert answer.request_id == "rsid-f08b8f47354d688d6de93c400fdaf31c" and answer.tokens_used == 126000
    assert answer.images[0].url.endswith(".png") and not answer.content_violation
    assert answer.inference_id == "inf-1" and answer.usd_spent == "0.04"


def test_flux_example():
    answer = parse_answer(json.dumps(FLUX).encode(), {})
    assert answer.seed == 2819715747 and answer.request_id is None and answer.tokens_used is None
    assert (answer.images[0].width, answer.images[0].height) == (1024, 768)


@pytest.mark.parametrize("body", [b"", b"{not json", b"[]", b'{"images": "x"}', b'{"data": "x"}'])
def test_anything_else_is_malformed_with_an_excerpt(body):
    with pytest.raises(MalformedResponse) as caught:
        parse_answer(body, {})
    assert caught.value.transient and caught.value.body_excerpt == body.decode()


@pytest.mark.parametrize(
    "body",
    [b'{"data": null, "meta": {"usage": {"tokens_used": 5}}}', b'{"data": [], "meta": null}'],
)
def test_nullable_shapes_of_the_openapi_schema_are_answers_without_images(body):
    answer = parse_answer(body, {})  # data, meta and usage are nullable in the API's schema
    assert answer.images == [] and not answer.content_violation


def test_error_bodies_give_message_and_request_id():
    body = json.dumps(
        {
            "message": "Body validation error!",
            "path": "/v1/images/generations",
            "requestId": "r-1",
            "statusCode": 400,
            "timestamp": "2026-01-01T00:00:00Z",
        }
    ).encode()
    assert error_excerpt(body) == ("Body validation error!", "r-1")
    assert error_excerpt(b"<html>Bad Gateway</html>") == ("<html>Bad Gateway</html>", None)


@pytest.mark.parametrize(
    ("shape", "body"),
    [
        ("A", {"data": [{"url": "https://cdn.test/a.png"}], "meta": {"usage": {"credits_used": 4200}}}),
        (
            "B",
            {
                "images": [{"url": "https://cdn.test/a.png", "width": 8, "height": 8}],
                "seed": 7,
                "timings": {},
            },
        ),
        (
            "C",
            {
                "images": [{"url": "https://cdn.test/a.png"}],
                "data": [{"url": "https://cdn.test/a.png"}],
                "meta": {},
            },
        ),
        (
            "D",
            {
                "created": 1,
                "data": [{"b64_json": "aGk=", "revised_prompt": "p"}],
                "usage": {"total_tokens": 9},
            },
        ),
        (
            "E",
            {
                "images": [
                    {"url": "https://cdn.test/a.png", "content_type": "image/png", "file_name": "a.png"}
                ],
                "description": "",
            },
        ),
        ("F", {"images": [{"url": "https://cdn.test/a.png"}]}),
        ("G", {"data": [{"mime_type": "image/png", "url": "https://cdn.test/a.png", "prompt": "p"}]}),
    ],
)
def test_every_answer_shape_the_model_pages_show_yields_its_images(shape, body):
    answer = parse_answer(json.dumps(body).encode(), {})
    assert len(answer.images) == 1, shape


def test_what_each_shape_returns_beyond_images_is_kept():
    openai = parse_answer(
        json.dumps(
            {
                "created": 1,
                "data": [{"url": "https://cdn.test/a.png", "revised_prompt": "a red cat"}],
                "usage": {"total_tokens": 9},
            }
        ).encode(),
        {},
    )
    assert openai.images[0].revised_prompt == "a red cat" and openai.usage == {"total_tokens": 9}
    both = parse_answer(
        json.dumps(
            {
                "images": [{"url": "https://cdn.test/a.png"}],
                "data": [{"url": "https://cdn.test/a.png"}],
                "seed": 7,
                "has_nsfw_concepts": [True],
            }
        ).encode(),
        {},
    )
    assert both.seed == 7 and both.content_violation and len(both.images) == 1
    inline = parse_answer(json.dumps({"images": [{"b64_json": "aGk="}]}).encode(), {})
    assert inline.images[0].b64_json == "aGk="


def test_the_cost_comes_from_the_headers_else_from_the_body_exactly():
    body = b'{"data": [{"url": "https://cdn.test/a.png"}], "meta": {"usage": {"credits_used": 4200, "usd_spent": 0.045}}}'
    from_body = parse_answer(body, {})
    assert from_body.cost is not None
    assert (from_body.cost.usd, from_body.cost.credits) == (
        Decimal("0.045"),
        Decimal(4200),
    )
    assert str(from_body.cost.usd) == "0.045"  # the number as written, not a float near it
    assert from_body.usage == {"credits_used": 4200, "usd_spent": 0.045}
    from_headers = parse_answer(body, {"x-aimlapi-usd-spent": "0.05", "x-aimlapi-credits-used": "2646"})
    assert from_headers.cost is not None and (from_headers.cost.usd, from_headers.cost.credits) == (
        Decimal("0.05"),
        Decimal(2646),
    )


def test_an_answer_of_an_unknown_shape_is_final_and_keeps_its_cost():
    body = json.dumps({"output": {"files": ["https://cdn.test/a.png"]}}).encode()
    with pytest.raises(UnrecognizedAnswer) as caught:
        parse_answer(body, {"x-aimlapi-usd-spent": "0.04"})
    error = caught.value
    assert not error.transient and error.cost is not None and error.cost.usd == Decimal("0.04")
    assert 'unknown shape (fields: "output")' in str(error) and '"files"' in (error.body_excerpt or "")


async def test_a_job_answered_in_an_unknown_shape_fails_once_paid_and_is_not_sent_again(tmp_path):
    posts = []

    async def handle(request: web.Request) -> web.Response:
        posts.append(request.path)
        return web.json_response({"result": "ok"}, status=201, headers={"x-aimlapi-usd-spent": "0.04"})

    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(1))
    async with serving(handle) as url:
        first = await run_jobs(job_file, tmp_path / "out", url)
        again = await run_jobs(job_file, tmp_path / "out", url)
    assert first.tally.failed_final == 1 and again.tally.failed_final == 1 and len(posts) == 1
    (record,) = manifest(tmp_path / "out")
    assert record["error"]["kind"] == "UnrecognizedAnswer" and record["usd_spent"] is None
    assert first.folder is not None and first.folder.total_spent.usd == Decimal("0.04")


@pytest.mark.parametrize(
    "extra",
    [
        {"seed": "abc"},
        {"usage": "n/a"},
        {"has_nsfw_concepts": "no"},
        {"meta": "none"},
        {"meta": {"usage": {"tokens_used": "Infinity"}}},
        {"meta": {"usage": {"tokens_used": float("nan")}}},
    ],
)
def test_an_odd_field_beside_the_image_is_dropped_never_a_reason_to_pay_again(extra):
    item = {
        "url": "https://cdn.test/a.png",
        "width": "auto",
        "revised_prompt": {"en": "x"},
        "content_type": 5,
    }
    answer = parse_answer(json.dumps({"data": [item], **extra}).encode(), {})
    (image,) = answer.images
    assert image.url == "https://cdn.test/a.png" and image.width is None and image.revised_prompt is None
    assert answer.seed is None and answer.tokens_used is None and not answer.content_violation


def test_numbers_written_as_text_are_read_as_before():
    answer = parse_answer(
        b'{"data": [{"url": "https://cdn.test/a.png"}], "meta": {"usage": {"tokens_used": "123"}}, "seed": "7"}',
        {},
    )
    assert (answer.tokens_used, answer.seed) == (123, 7)


@pytest.mark.parametrize(
    "extra",
    [{"images": "none"}, {"images": [{"url": 3}]}, {"images": [None, 7]}],
    ids=["text", "bad-url", "junk"],
)
def test_images_in_data_are_used_whatever_the_other_list_holds(extra):
    answer = parse_answer(
        json.dumps({"data": [None, {"url": "https://cdn.test/a.png"}], **extra}).encode(), {}
    )
    assert [i.url for i in answer.images] == ["https://cdn.test/a.png"]


def test_a_violation_flag_written_as_one_counts():
    body = {"images": [{"url": "https://cdn.test/a.png"}], "has_nsfw_concepts": [1]}
    assert parse_answer(json.dumps(body).encode(), {}).content_violation


async def test_a_cost_only_in_the_body_is_recorded_and_summed_exactly(tmp_path):
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(picture, "PNG")
    inline = base64.b64encode(picture.getvalue()).decode()
    sent: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        sent.append(await request.json())
        usage = {"usd_spent": 0.045, "credits_used": 2646}  # (no cost header at all)
        return web.json_response({"data": [{"b64_json": inline}], "meta": {"usage": usage}})

    jobs = create_jobs(3)
    job_file = write_jsonl(tmp_path / "j.jsonl", jobs)
    async with serving(handle) as url:
        report = await run_jobs(job_file, tmp_path / "out", url)
    assert report.complete and sent == [{k: v for k, v in job.items() if k != "id"} for job in jobs]
    records = manifest(tmp_path / "out")
    assert {(r["usd_spent"], r["credits_used"]) for r in records} == {("0.045", "2646")}
    status = await read_status(tmp_path / "out")
    assert (status["spent"]["usd"], status["spent"]["credits"]) == (Decimal("0.135"), Decimal("7938"))
