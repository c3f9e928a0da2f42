"""Computes ACS3-HMAC-SHA256 signatures with Alibaba Cloud's official
signer (PyPI: alibabacloud_tea_openapi, its Utils.get_authorization) for
the requests kbsync's PAI client sends, and writes them as test vectors.

    python3 -m pip install alibabacloud_tea_openapi
    python3 tests/vectors/acs3_sdk.py > tests/vectors/acs3_sdk.json

tests/pai_signature.rs checks kbsync's signer against the JSON, so the
tests need no Python; run this again to refresh the vectors.
"""

import hashlib
import json
from types import SimpleNamespace

from alibabacloud_tea_openapi.utils import Utils

KEY_ID = "LTAI5tVectorKeyId"
SECRET = "VectorSecret0123456789abcdefghij"
PATH = "/api/v1/datasets/d-lfd60v0p0000ujtsdx/datasetfilemetas"


def headers(action, date, nonce, body_hash, content_type=None):
    h = {
        "host": "aiworkspace.cn-hangzhou.aliyuncs.com",
        "x-acs-action": action,
        "x-acs-version": "2021-02-04",
        "x-acs-date": date,
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": body_hash,
    }
    if content_type:
        h["content-type"] = content_type
    return h


def case(name, method, query, body, action, date, nonce):
    body_hash = hashlib.sha256(body.encode("utf-8")).hexdigest()
    content_type = "application/json; charset=utf-8" if body else None
    hs = headers(action, date, nonce, body_hash, content_type)
    request = SimpleNamespace(method=method, pathname=PATH, query=query, headers=hs)
    auth = Utils.get_authorization(request, "ACS3-HMAC-SHA256", body_hash, KEY_ID, SECRET)
    return {
        "name": name,
        "method": method,
        "path": PATH,
        "query": query,
        "headers": hs,
        "body": body,
        "key_id": KEY_ID,
        "secret": SECRET,
        "authorization": auth,
    }


CASES = [
    case(
        "list, first page",
        "GET",
        {"DatasetVersion": "v1", "WorkspaceId": "796123", "MaxResults": "100"},
        "",
        "ListDatasetFileMetas",
        "2026-11-24T10:00:00Z",
        "nonce-0001",
    ),
    case(
        "list, a page token needing escapes",
        "GET",
        {
            "DatasetVersion": "v1",
            "WorkspaceId": "796123",
            "MaxResults": "100",
            "NextToken": "AAE/tok+en==;a b*c~d",
        },
        "",
        "ListDatasetFileMetas",
        "2026-11-24T10:00:01Z",
        "nonce-0002",
    ),
    case(
        "update, JSON body with non-ASCII metadata",
        "PUT",
        {},
        json.dumps(
            {
                "WorkspaceId": "796123",
                "DatasetVersion": "v1",
                "DatasetFileMetas": [
                    {
                        "DatasetFileMetaId": "f-1",
                        "FileName": "café menu.md",
                        "MetaAttributes": json.dumps({"owner": "Zoë", "section": "財務"}),
                    }
                ],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ),
        "UpdateDatasetFileMetas",
        "2026-11-24T10:00:02Z",
        "nonce-0003",
    ),
    case(
        "delete, one record",
        "DELETE",
        {"DatasetVersion": "v1", "WorkspaceId": "796123", "DatasetFileMetaIds": "f-1"},
        "",
        "DeleteDatasetFileMetas",
        "2026-11-24T10:00:03Z",
        "nonce-0004",
    ),
]

print(json.dumps(CASES, ensure_ascii=False, indent=1))
