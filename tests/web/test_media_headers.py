"""Uploaded files carry nosniff and a sandboxing Content-Security-Policy wherever they are served: by Django
with DEBUG (`make run`, config.settings.local) and by Caddy in production (docker/Caddyfile, from the
bucket)."""

import io
import json
import os
import pathlib
import re
import subprocess
import sys

from PIL import Image

from catalog.photos import ORIGINALS_PREFIX
from config.media import MEDIA_CONTENT_SECURITY_POLICY

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CADDYFILE = REPO_ROOT / "docker" / "Caddyfile"


def caddyfile_blocks(text: str) -> list[tuple[list[str], list]]:
    """The Caddyfile as nested (tokens of a line, lines of its { } block), without quotes and comments."""
    root: list[tuple[list[str], list]] = []
    stack = [root]
    for line in text.splitlines():
        words = re.findall(r'"[^"]*"|[^\s"]+', line)
        comment = next((index for index, word in enumerate(words) if word.startswith("#")), len(words))
        tokens = [word[1:-1] if word.startswith('"') else word for word in words[:comment]]
        if not tokens:
            continue
        if tokens == ["}"]:
            stack.pop()
            continue
        opens = tokens[-1] == "{"
        entry = (tokens[:-1] if opens else tokens, [])
        stack[-1].append(entry)
        if opens:
            stack.append(entry[1])
    return root


def block(lines: list, *tokens: str) -> list:
    return next(children for line, children in lines if line == list(tokens))


def test_caddy_serves_media_with_nosniff_and_the_same_policy_as_django() -> None:
    (site,) = caddyfile_blocks(CADDYFILE.read_text())
    media = block(site[1], "handle", "/media/*")

    header = block(media, "header")
    headers = {line[0]: line[1] for line, _ in header if len(line) == 2}

    assert headers == {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": MEDIA_CONTENT_SECURITY_POLICY,
    }
    # Deferred: written over whatever the bucket's server answers with.
    assert ["defer"] in [line for line, _ in header]
    assert ["reverse_proxy", "minio:9000"] in [line for line, _ in media]


def test_caddy_passes_media_to_the_bucket_without_the_shops_cookies() -> None:
    (site,) = caddyfile_blocks(CADDYFILE.read_text())
    media = [line for line, _ in block(site[1], "handle", "/media/*")]

    # /media/products/x.png -> /<bucket>/media/products/x.png: the object's key keeps the media/ prefix.
    assert ["rewrite", "*", "/{$AWS_STORAGE_BUCKET_NAME}{path}"] in media
    assert ["request_header", "-Cookie"] in media
    assert ["request_header", "-Authorization"] in media


def test_caddy_refuses_the_kept_originals_before_asking_the_bucket() -> None:
    (site,) = caddyfile_blocks(CADDYFILE.read_text())

    originals = block(site[1], "handle", f"/media/{ORIGINALS_PREFIX}*")

    # Caddy tries the longer path first, whichever block comes first in the file.
    assert [line for line, _ in originals] == [["respond", "404"]]


def test_django_serves_media_with_debug_with_nosniff_and_a_sandbox_but_never_originals(
    tmp_path: pathlib.Path,
) -> None:
    photo = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(photo, format="PNG")
    (tmp_path / "products").mkdir()
    (tmp_path / "products" / "photo.png").write_bytes(photo.getvalue())
    (tmp_path / "products" / "page.html").write_text("<script>alert(document.cookie)</script>")
    (tmp_path / ORIGINALS_PREFIX / "products").mkdir(parents=True)
    (tmp_path / ORIGINALS_PREFIX / "products" / "photo.png").write_bytes(photo.getvalue())
    fetch = (
        "import django, json; django.setup(); from django.test import Client; client = Client(); "
        "responses = {name: client.get(f'/media/{name}', HTTP_HOST='127.0.0.1') "
        "for name in ('products/photo.png', 'products/page.html', 'originals/products/photo.png', "
        "'products/../originals/products/photo.png', 'originals/')}; "
        "print(json.dumps({name: [r.status_code, r.headers.get('Content-Type'), "
        "r.headers.get('X-Content-Type-Options'), r.headers.get('Content-Security-Policy')] "
        "for name, r in responses.items()}))"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    environment.update(DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_MEDIA_ROOT=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "-c", fetch],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["products/photo.png"] == [200, "image/png", "nosniff", MEDIA_CONTENT_SECURITY_POLICY]
    assert served["products/page.html"] == [200, "text/html", "nosniff", MEDIA_CONTENT_SECURITY_POLICY]
    # Kept originals (EXIF and GPS included) are never served, however the path is spelled.
    assert ORIGINALS_PREFIX == "originals/"
    originals = ("originals/products/photo.png", "products/../originals/products/photo.png", "originals/")
    for original in originals:
        assert served[original][0] == 404, original
    assert MEDIA_CONTENT_SECURITY_POLICY.startswith("default-src 'none';")
    assert MEDIA_CONTENT_SECURITY_POLICY.endswith("; sandbox")
