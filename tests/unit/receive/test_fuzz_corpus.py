"""Replays the fuzzing corpus (tests/testdata/fuzz) through both receivers.

Each file is one hostile request kept as a regression test, most of them found by
test_fuzz_receivers.py. A `.bin` file is a protobuf body: it is sent over gRPC, over OTLP/HTTP
and over OTLP/HTTP gzipped. A `.json` file is an OTLP/JSON body sent over OTLP/HTTP; when it
decodes, its protobuf equivalent is sent over gRPC and OTLP/HTTP as well. Every replay must get
the expected answer, the sampler must keep serving, and the sentinel session buffered before
must come out unharmed (which also decides the accepted spans, so a case that broke deciding
fails here too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sampler.otlp.json_codec import request_from_json
from sampler.receive.http_server import JSON
from tests.unit.receive._hostile import Front, check_grpc, check_http, rejected_spans

CORPUS = Path(__file__).parents[2] / "testdata" / "fuzz"

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class Case:
    file: str
    grpc: grpc.StatusCode  # for a .json file that does not decode: what its bytes would get
    http: int
    rejected: int = 0  # spans refused through OTLP partial success
    found: str = ""  # what it broke before it was fixed

    def __str__(self) -> str:
        return self.file


_BROKE_INGEST = "Pipeline.consume raised: gRPC UNKNOWN / HTTP 500, the request half buffered"

CASES = [
    # Attribute values the span extractor converts.
    Case("http-status-superscript-two.bin", OK, 200,
         found=f"'²'.isdigit() is true but int('²') fails: {_BROKE_INGEST}"),
    Case("llm-tokens-nan.bin", OK, 200, found=f"int(NaN): {_BROKE_INGEST}"),
    Case("llm-tokens-infinite.bin", OK, 200, found=f"int(inf): {_BROKE_INGEST}"),
    Case("llm-tokens-5000-digits.bin", OK, 200,
         found=f"int() of more than 4,300 digits: {_BROKE_INGEST}"),
    Case("llm-tokens-1e308-twice.bin", OK, 200,
         found="token sum beyond a float: OverflowError when the session was decided"),
    Case("tool-arguments-nested-5000.bin", OK, 200,
         found=f"json.loads of the tool arguments hit RecursionError: {_BROKE_INGEST}"),
    Case("openinference-tool-input-nested.bin", OK, 200,
         found=f"the same through OpenInference's input.value: {_BROKE_INGEST}"),
    # Ids: partial success for the spans that carry bad ones; the rest is kept.
    Case("all-zero-trace-id.bin", OK, 200, rejected=1,
         found="accepted: every such span joined one giant trace of id 0"),
    Case("all-zero-span-id.bin", OK, 200, rejected=1, found="accepted"),
    Case("wrong-length-ids.bin", OK, 200, rejected=2),
    Case("all-zero-ids.json", OK, 200, rejected=2, found="accepted"),
    Case("hex-trace-id-31-digits.json", INVALID, 400),
    Case("base64-trace-id.json", INVALID, 400),
    # Nesting: protobuf's limit of 100 messages, the same for OTLP/JSON.
    Case("deep-array-value-at-limit.bin", OK, 200),
    Case("deep-array-value-over-limit.bin", INVALID, 400),
    Case("deep-array-value-1000.bin", INVALID, 400),
    Case("deep-kvlist-value-1000.bin", INVALID, 400),
    Case("deep-kvlist-60.json", INVALID, 400),
    # Framing, numbers, times.
    Case("length-prefix-2-64.bin", INVALID, 400),
    Case("times-end-before-start-and-extremes.bin", OK, 200),
    Case("timestamps-extremes-as-numbers.json", OK, 200),
    Case("timestamp-2-64.json", INVALID, 400),
    Case("int-value-5000-digits.json", INVALID, 400),
    Case("bare-nan-and-infinity.json", INVALID, 400),  # not JSON; quoted, they are doubles:
    Case("quoted-nan-and-infinity.json", OK, 200),
    Case("unpaired-surrogate.json", INVALID, 400),
    Case("unpaired-surrogate-in-key.json", INVALID, 400,
         found="upb's SystemError escaped json_format: HTTP 500"),
    Case("unpaired-surrogate-for-an-object.json", INVALID, 400,
         found="the same, for a string where ParseDict expects an object"),
    Case("unpaired-surrogate-for-an-array.json", INVALID, 400,
         found="the error text quoted the surrogate: no valid google.rpc.Status, HTTP 500"),
    Case("error-echo-huge-double.json", INVALID, 400,
         found="the 400 quoted the whole 20 KB value back (any size up to the body limit)"),
]  # fmt: skip


def test_every_corpus_file_has_a_case() -> None:
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(case.file for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_corpus_case(case: Case) -> None:
    body = (CORPUS / case.file).read_bytes()
    with Front().started() as front:
        if case.file.endswith(".json"):
            as_json = front.http(body, JSON)
            check_http(as_json)
            assert as_json.status == case.http, as_json
            if case.http == 200:
                assert rejected_spans(as_json) == case.rejected
                body = request_from_json(body).SerializeToString()
            else:
                body = b""  # no protobuf equivalent: nothing more to send
        if body:
            for rpc in (front.grpc(body), front.grpc(body, gzip=True)):
                check_grpc(rpc)
                assert rpc.code is case.grpc, rpc
                if rpc.code is OK:
                    assert rejected_spans(rpc) == case.rejected
            for post in (front.http(body), front.http_gzip(body)):
                check_http(post)
                assert post.status == case.http, post
                if post.status == 200:
                    assert rejected_spans(post) == case.rejected
        front.check_still_serving()
        front.check_sentinel_unharmed()
