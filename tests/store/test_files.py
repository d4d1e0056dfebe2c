"""Safe file names from hostile job ids (property-based)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.store.files import safe_name

WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=300))
def test_any_id_maps_to_a_portable_bounded_name(job_id):
    name = safe_name(job_id)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert not name.startswith(".")
    assert not WINDOWS_RESERVED.match(name.split("-")[0])
    assert len(name) <= 80 + 11


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_different_ids_get_different_names_even_ignoring_case(a, b):
    if a != b:  # macOS and Windows compare names without case
        assert safe_name(a).lower() != safe_name(b).lower()


def test_examples():
    assert safe_name("trex").startswith("trex-")
    assert safe_name("../../etc/passwd").startswith("etc_passwd-")
    assert safe_name("con").startswith("_con-")
    assert safe_name("....").startswith("job-")
