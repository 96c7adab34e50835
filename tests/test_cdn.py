"""The CDN (issue 14, item 2; the architecture document's "CDN Integration").

Thumbnails, previews and results are content-addressed (the SHA-256 of their bytes in the key),
stored with ``Cache-Control: public, max-age=31536000, immutable``, and with ``CDN_BASE_URL`` set
their URLs go through the CDN; originals stay presigned.

The whole path runs for real: ``picfilter serve`` (its embedded worker makes the thumbnail and
the apply result) on S3 through a moto server on loopback (bucket ``picfilter-storage``, compose's
default), and the CDN is nginx from deploy/nginx.conf (its :9444 edge server block, only ports,
certificates, logs and the cache folder rewritten for loopback, upstream ``minio`` -> moto). Each
object is fetched twice through the edge: the first is a MISS, the second a HIT with the same
bytes, the bytes the key names. An original's key is not served by the edge at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest

from app.storage.keys import IMMUTABLE_CACHE_CONTROL, is_immutable
from bench import free_port, running_server
from tests.helpers import encode, synthetic_photo
from tests.s3_server import ACCESS_KEY, SECRET_KEY, VerifyingMotoServer
from tests.test_deploy_proxy import (
    NGINX_PORTS,
    SETTINGS_VARS,
    loopback_nginx_conf,
    nginx_binary,
    nginx_running,
)

pytestmark = [
    pytest.mark.slow,
    # its own stack whatever PICFILTER_TEST_BACKEND says: once per `make test` is enough
    pytest.mark.skipif(
        os.environ.get("PICFILTER_TEST_BACKEND") == "postgres",
        reason="self-contained stack: runs in the embedded pass of `make test`",
    ),
]

BUCKET = "picfilter-storage"  # what the :9444 block of deploy/nginx.conf proxies to


@dataclass
class CdnStack:
    api: str
    cdn: str
    s3: Any  # a boto3 client of the moto server
    moto_url: str


@pytest.fixture(scope="module")
def cdn_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CdnStack]:
    nginx = nginx_binary()
    tmp = tmp_path_factory.mktemp("cdn")
    moto = VerifyingMotoServer()
    moto.start()
    try:
        moto_port = int(moto.url.rsplit(":", 1)[1])
        api_port = free_port()
        ports = {port: free_port() for port in NGINX_PORTS}
        cdn = f"https://127.0.0.1:{ports['9444']}"
        env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
        env.pop("REDIS_KEY_PREFIX", None)
        env.update(
            DATA_DIR=str(tmp / "data"),
            JWT_SECRET_KEY="cdn-test-" + "k" * 40,
            RATE_LIMIT_ENABLED="false",
            BCRYPT_ROUNDS="4",
            LOG_LEVEL="WARNING",
            STORAGE_BACKEND="s3",
            S3_ENDPOINT=moto.url,
            S3_ACCESS_KEY=ACCESS_KEY,
            S3_SECRET_KEY=SECRET_KEY,
            S3_BUCKET=BUCKET,
            S3_CREATE_BUCKET="true",
            CDN_BASE_URL=cdn,
            CELERY_RETRY_DELAY="1",
        )
        command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(api_port)]
        s3 = boto3.client(
            "s3",
            endpoint_url=moto.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        conf = loopback_nginx_conf(tmp, api_port, ports, minio_port=moto_port)
        with (
            running_server(command, env, api_port, log_path=tmp / "api.log", timeout=120) as (
                api,
                _pid,
            ),
            nginx_running(nginx, conf, tmp, ports["443"]),
        ):
            yield CdnStack(api=api, cdn=cdn, s3=s3, moto_url=moto.url)
    finally:
        moto.stop()


def _account(client: httpx.Client) -> dict[str, str]:
    name = f"cdn{uuid.uuid4().hex[:8]}"
    body = {"email": f"{name}@example.com", "username": name, "password": f"Cdn-{uuid.uuid4()}"}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    r = client.post(
        "/api/v1/auth/login", json={"email": body["email"], "password": body["password"]}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _wait_job(client: httpx.Client, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            assert job["status"] == "completed", job
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in 180 s")


def _key_of(cdn: str, url: str) -> str:
    assert url.startswith(f"{cdn}/"), url
    return url[len(cdn) + 1 :]


def fetch_twice_through_the_cdn(stack: CdnStack, url: str) -> bytes:
    """MISS then HIT, same bytes, a year of immutable caching; returns the bytes."""
    key = _key_of(stack.cdn, url)
    assert is_immutable(key), key
    with httpx.Client(verify=False, timeout=30) as plain:
        first = plain.get(url)
        second = plain.get(url)
    assert first.status_code == 200, (first.status_code, first.text[:300])
    assert second.status_code == 200
    assert first.headers["x-cache-status"] == "MISS", first.headers
    assert second.headers["x-cache-status"] == "HIT", second.headers
    assert second.content == first.content
    assert first.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
    assert second.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
    # the key names these bytes, which are the stored object's, which carries the header
    sha = re.search(r"-([0-9a-f]{32})\.[a-z0-9]+$", key)
    assert sha
    assert hashlib.sha256(first.content).hexdigest()[:32] == sha[1]
    obj = stack.s3.get_object(Bucket=BUCKET, Key=key)
    assert obj["Body"].read() == first.content
    assert obj["CacheControl"] == IMMUTABLE_CACHE_CONTROL
    return first.content


def _cube(size: int = 5) -> bytes:
    ramp = np.linspace(0.0, 1.0, size)
    lines = ['TITLE "warm"', f"LUT_3D_SIZE {size}"]
    for b in ramp:
        for g in ramp:
            for r in ramp:
                lines.append(f"{min(1.0, r * 1.1):.6f} {g:.6f} {b * 0.85:.6f}")
    return ("\n".join(lines) + "\n").encode()


def test_thumbnails_previews_and_results_go_through_the_cdn(cdn_stack: CdnStack) -> None:
    with httpx.Client(base_url=cdn_stack.api, timeout=60) as client:
        auth = _account(client)
        png = encode(synthetic_photo(200, 150, seed=3))
        r = client.post(
            "/api/v1/images/upload",
            json={"filename": "p.png", "content_type": "image/png", "size": len(png)},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        up = r.json()
        assert up["upload_url"].startswith(cdn_stack.moto_url)
        assert httpx.put(up["upload_url"], content=png, headers=up["headers"]).status_code == 200
        r = client.post(f"/api/v1/images/{up['image_id']}/confirm", headers=auth)
        assert r.status_code == 200, r.text
        [thumb_job] = client.get("/api/v1/jobs", headers=auth).json()["items"]
        _wait_job(client, auth, thumb_job["id"])
        image = client.get(f"/api/v1/images/{up['image_id']}", headers=auth).json()

        # the original: presigned on the S3 endpoint, never a CDN URL
        assert image["original_url"].startswith(cdn_stack.moto_url), image
        assert "X-Amz-Signature=" in image["original_url"]
        assert httpx.get(image["original_url"]).content == png
        # the thumbnail: through the CDN
        thumb = fetch_twice_through_the_cdn(cdn_stack, image["thumbnail_url"])
        assert thumb[:4] == b"RIFF"
        assert thumb[8:12] == b"WEBP"

        # the preview of an imported style
        r = client.post(
            "/api/v1/styles/import",
            files={"file": ("warm.cube", _cube(), "application/octet-stream")},
            data={"name": "Warm", "visibility": "public"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        style = r.json()
        fetch_twice_through_the_cdn(cdn_stack, style["preview_url"])
        # ... in the public gallery too (anonymous)
        items = client.get("/api/v1/styles", params={"limit": 50}).json()["items"]
        assert style["preview_url"] in [i["preview_url"] for i in items]

        # the result of an apply job
        r = client.post(
            f"/api/v1/styles/{style['id']}/apply",
            json={"image_id": up["image_id"], "format": "png"},
            headers=auth,
        )
        assert r.status_code == 202, r.text
        job = _wait_job(client, auth, r.json()["id"])
        result = fetch_twice_through_the_cdn(cdn_stack, job["result"]["result_url"])
        assert result[:8] == b"\x89PNG\r\n\x1a\n"
        assert job["result"]["filename"].endswith(".png")  # the download name, kept aside

        # the edge serves content-addressed keys only: an original's key is a 404 there
        original_key = _key_of(
            cdn_stack.moto_url + f"/{BUCKET}", image["original_url"].split("?")[0]
        )
        with httpx.Client(verify=False, timeout=30) as plain:
            refused = plain.get(f"{cdn_stack.cdn}/{original_key}")
        assert refused.status_code == 404
        assert refused.content != png
        # and the bucket policy (cdn_read_policy) keeps it private for anonymous readers
        unsigned = httpx.get(f"{cdn_stack.moto_url}/{BUCKET}/{original_key}")
        assert unsigned.status_code == 403
        assert (
            httpx.get(
                f"{cdn_stack.moto_url}/{BUCKET}/{_key_of(cdn_stack.cdn, image['thumbnail_url'])}"
            ).status_code
            == 200
        )


def test_without_a_cdn_the_same_keys_are_presigned(tmp_path: Path) -> None:
    """CDN_BASE_URL unset: even an immutable key gets a presigned (expiring) URL."""
    from app.config import Settings
    from app.storage import S3Storage
    from app.storage.keys import thumbnail_key

    base = {
        "_env_file": None,
        "storage_backend": "s3",
        "s3_endpoint": "http://127.0.0.1:9",
        "s3_access_key": ACCESS_KEY,
        "s3_secret_key": SECRET_KEY,
        "jwt_secret_key": "cdn-unit-" + "k" * 40,
    }
    key = thumbnail_key(uuid.uuid4(), uuid.uuid4(), b"thumb")
    plain = S3Storage(Settings(**base))
    assert "X-Amz-Signature=" in plain.presign_get(key)
    cdn = S3Storage(Settings(**base, cdn_base_url="https://cdn.example.com/"))
    assert cdn.presign_get(key) == f"https://cdn.example.com/{key}"
    original = key.rsplit("/", 1)[0] + "/original.jpg"
    assert "X-Amz-Signature=" in cdn.presign_get(original)
    with pytest.raises(ValueError, match="CDN_BASE_URL"):
        Settings(**{**base, "cdn_base_url": "cdn.example.com"})
