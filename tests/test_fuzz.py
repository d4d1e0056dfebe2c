"""Property and fuzz tests of job files (hypothesis): the parser fails only with JobFileError,
and valid jobs reach the wire exactly as written."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import JobFileError
from batchgen.jobs.load import iter_jobs, scan_job_file
from batchgen.simulator.validation import validate_body

RATIOS = ["16:9", "9:16", "3:2", "2:3", "4:3", "3:4", "1:1"]
URLS = st.sampled_from(
    ["https://x.test/a.png", "http://cdn.test/b.jpg", "data:image/png;base64,iVBORw0KGgo="]
)
PROMPT = st.text(max_size=300)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


JOBS = st.one_of(
    st.tuples(
        st.fixed_dictionaries({"model": st.just("reve/create-image"), "prompt": PROMPT}),
        optional(
            aspect_ratio=st.sampled_from(RATIOS),
            convert_base64_to_url=st.booleans(),
            output_format=st.just("json"),
        ),
    ),
    st.tuples(
        st.fixed_dictionaries({"model": st.just("reve/edit-image"), "prompt": PROMPT, "image_url": URLS}),
        optional(convert_base64_to_url=st.booleans()),
    ),
    st.tuples(
        st.fixed_dictionaries(
            {
                "model": st.just("reve/remix-edit-image"),
                "prompt": PROMPT,
                "image_urls": st.lists(URLS, min_size=1, max_size=4),
            }
        ),
        optional(aspect_ratio=st.sampled_from(RATIOS)),
    ),
    st.tuples(
        st.fixed_dictionaries(
            {"model": st.just("flux/dev/image-to-image"), "prompt": PROMPT, "image_url": URLS}
        ),
        optional(
            guidance_scale=st.floats(1, 20),
            num_inference_steps=st.integers(1, 50),
            enable_safety_checker=st.booleans(),
            num_images=st.integers(1, 4),
            seed=st.integers(1, 2**40),
            strength=st.floats(0, 1),
        ),
    ),
).map(lambda pair: {**pair[0], **pair[1]})

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def scan_text(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"jobs{suffix}"
        path.write_bytes(data)
        with contextlib.suppress(JobFileError):
            scan_job_file(path)


@FAST
@given(st.lists(JOBS, min_size=1, max_size=5))
def test_valid_jobs_reach_the_wire_exactly_as_written(jobs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.jsonl"
        path.write_text("".join(json.dumps({"id": f"j{i}", **job}) + "\n" for i, job in enumerate(jobs)))
        sent = [job.body for job in iter_jobs(path)]
    assert sent == jobs
    assert all(validate_body(body) is None for body in sent)  # and the docs' server takes them


@FAST
@given(st.binary(max_size=400), st.sampled_from([".yaml", ".jsonl"]))
def test_arbitrary_bytes_only_ever_raise_job_file_error(data, suffix):
    scan_text(data, suffix)


@FAST
@given(JOBS, st.data())
def test_mutated_jobs_only_ever_raise_job_file_error(job, data):
    key = data.draw(st.sampled_from([*job, "promt", "id", "model", "image_urls"]))
    value = data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=20),
            st.lists(st.text(max_size=5), max_size=6),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        )
    )
    mutated = {**job, key: value}
    scan_text((json.dumps(mutated) + "\n").encode(), ".jsonl")
    yaml_text = "jobs:\n  - " + json.dumps(mutated) + "\n"
    cut = data.draw(st.integers(0, len(yaml_text)))
    scan_text(yaml_text[:cut].encode(), ".yaml")


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["model", "prompt", "image_url", "id", "seed", "x"]) | st.integers(), YAML_VALUES
    )
)
def test_arbitrary_yaml_structures_only_ever_raise_job_file_error(job):
    document = {"defaults": {"model": "reve/create-image"}, "jobs": [job]}
    scan_text(yaml.safe_dump(document).encode(), ".yaml")
