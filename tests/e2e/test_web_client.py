"""The web client end to end, in headless Chromium against a real embedded ``picfilter serve``.

One flow, as a new user without docs would go (issue 13): sign up; upload photos (one refused,
explained); drop two before/after pairs paired by file name; learn a style and read its metrics;
preview it at strength 0.5 in the browser (the slider's latency is measured there with
``performance.now()``); apply at full resolution and download the result, whose pixels must be
the API's own apply of the same photo; "download all" as a zip; export a ``.cube``; import it back
as a style; then a second user rates and comments, and the gallery's top-rated order changes.
Every request stays on the server's origin. Each main screen is scanned with axe-core (no
serious or critical violation) and photographed at 375 and 1280 px wide (into a temporary
folder, or ``PICFILTER_SCREENSHOTS_DIR``, e.g. ``docs/screenshots`` to refresh the README's).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
AXE = HERE / "vendor" / "axe.min.js"
SHARED_PHOTOS = (
    Path(os.environ.get("PICFILTER_SHARED_DATA", HERE.parents[2] / "shared" / "data")) / "photos"
)
PASSWORD = "e2e-passw0rd!"
LOAD_BUDGET = 300 * 1024
REPORT: dict[str, Any] = {}


# ---- test images ----------------------------------------------------------------------------
def _base_photos() -> list[np.ndarray]:
    """Three real photos (shared data) or, without it, three generated ones: two small ones to
    learn from, and one 1600 px wide to apply (its screen preview is 1280 px wide)."""
    names = [("coffee.png", 360), ("rocket.jpg", 360), ("UNIS_EV0.jpg", 1600)]
    out = []
    for i, (name, w) in enumerate(names):
        path = SHARED_PHOTOS / name
        if path.exists():
            with Image.open(path) as im:
                rgb = im.convert("RGB")
                rgb = rgb.resize((w, round(rgb.height * w / rgb.width)), Image.Resampling.LANCZOS)
            out.append(np.asarray(rgb))
        else:
            y, x = np.mgrid[0 : w * 2 // 3, 0:w].astype(np.float64) * (360 / w)
            img = np.stack(
                [0.5 + 0.5 * np.sin(x / 57 + i), 0.5 + 0.5 * np.sin(y / 41 + 2 * i), (x + y) / 600],
                -1,
            )
            out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


def _look(img: np.ndarray) -> np.ndarray:
    """A warm, contrasty look (what a retoucher's edit might do globally)."""
    x = img.astype(np.float64) / 255.0
    x = x ** np.array([0.85, 0.95, 1.15])
    x = 0.5 + (x - 0.5) * 1.15
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("e2e-files")
    a, b, c = _base_photos()
    out = {}
    for name, img in [("alps.jpg", a), ("alps-edit.jpg", _look(a)), ("dune.jpg", b)]:
        out[name] = d / name
        out[name].write_bytes(_jpeg(img))
    out["dune_edit.jpg"] = d / "dune_edit.jpg"
    out["dune_edit.jpg"].write_bytes(_jpeg(_look(b)))
    out["street.jpg"] = d / "street.jpg"
    out["street.jpg"].write_bytes(_jpeg(c))
    out["notes.txt"] = d / "notes.txt"
    out["notes.txt"].write_text("not a photo")
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("PICFILTER_SCREENSHOTS_DIR")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- browser helpers ------------------------------------------------------------------------
class Session:
    """A browser context with a request log (every URL must stay on the server's origin)."""

    def __init__(self, browser: Any, base: str, width: int = 1280) -> None:
        self.base = base
        self.context = browser.new_context(
            viewport={"width": width, "height": 900},
            accept_downloads=True,
        )
        # axe-core through the DevTools protocol (not a <script> the page's CSP would refuse):
        # the server's Content-Security-Policy stays enforced for everything the client does.
        self.context.add_init_script(path=str(AXE))
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # a CSP violation is a console error ("Refused to ... Content Security Policy ...")
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None,
        )

    def go(self, route: str) -> None:
        self.page.goto(f"{self.base}/#/{route}")
        self.page.wait_for_load_state("networkidle")

    def token(self) -> str:
        s = json.loads(self.page.evaluate("() => localStorage.getItem('picfilter.session')"))
        return str(s["access"])

    def foreign_requests(self) -> list[str]:
        return [
            u
            for u in self.requests
            if not (u.startswith(self.base + "/") or u.startswith(("blob:", "data:")))
        ]

    def axe(self) -> list[dict[str, Any]]:
        assert self.page.evaluate("() => !!window.axe"), "axe-core was not injected"
        result = self.page.evaluate(
            "async () => await axe.run(document, {resultTypes: ['violations']})"
        )
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]

    def close(self) -> None:
        self.context.close()


def sign_up(s: Session, username: str) -> None:
    s.go("account")
    form = s.page.locator("form", has=s.page.get_by_role("heading", name="Create an account"))
    form.get_by_label("Email").fill(f"{username}@example.com")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Sign up").click()
    s.page.wait_for_url("**/#/photos")
    s.page.get_by_role("link", name=username).wait_for()


def wait_job_text(s: Session, text: str, timeout: float = 240_000) -> None:
    s.page.get_by_text(text).first.wait_for(timeout=timeout)


def check_screen(s: Session, name: str, shots: Path, findings: dict[str, Any]) -> None:
    """axe-core at 1280 and 375 px, and a full-page screenshot at each."""
    for width in (1280, 375):
        s.page.set_viewport_size({"width": width, "height": 900})
        s.page.wait_for_timeout(200)
        s.page.screenshot(
            path=str(shots / f"{name}-{width}.jpg"), full_page=True, type="jpeg", quality=70
        )
        findings[f"{name}@{width}"] = s.axe()
    s.page.set_viewport_size({"width": 1280, "height": 900})


# ---- the flow -------------------------------------------------------------------------------
def test_first_visit_to_downloaded_styled_photo_and_community(
    web_server: str, browser: Any, files: dict[str, Path], shots: Path, tmp_path: Path
) -> None:
    base = web_server
    findings: dict[str, Any] = {}
    s = Session(browser, base)
    page = s.page

    # The page is served with its Content-Security-Policy, enforced in this browser context.
    csp = page.request.get(f"{base}/").headers["content-security-policy"]
    assert "script-src 'self';" in csp, csp
    assert "unsafe-inline" not in csp, csp
    # First load: transferred bytes of the page and everything it loaded.
    s.go("")
    load_bytes = page.evaluate(
        "() => performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource')).reduce((n, e) => n + e.transferSize, 0)"
    )
    REPORT["first_load_bytes"] = load_bytes
    assert 0 < load_bytes <= LOAD_BUDGET, load_bytes
    check_screen(s, "community-empty", shots, findings)
    s.go("account")
    check_screen(s, "account", shots, findings)

    # Sign up, then upload: one refused file (explained), one photo by a real drop event.
    sign_up(s, "ansel")
    page.locator(".drop input[type=file]").set_input_files(
        [str(files["street.jpg"]), str(files["notes.txt"])]
    )
    page.get_by_text("refused: notes.txt: not a photo").wait_for()
    page.locator(".upload.ok").wait_for()
    data = files["street.jpg"].read_bytes()
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: 'image/jpeg'}));
            document.querySelector('.drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(data).decode(), "street-copy.jpg"],
    )
    page.locator(".upload.ok").nth(1).wait_for()
    page.locator(".tile", has_text="street-copy.jpg").wait_for()
    page.locator(".tile img").first.wait_for(timeout=60_000)  # thumbnails made by the worker
    check_screen(s, "photos", shots, findings)

    # Teach: two pairs dropped at once, paired by name; the model list comes from the API.
    s.go("teach")
    default_model = page.locator("input[name=model]:checked").get_attribute("value")
    REPORT["default_model"] = default_model
    page.get_by_label("Style name").fill("Warm contrast")
    page.get_by_label("Who can see it").select_option("public")
    page.locator(".drop input[type=file]").set_input_files(
        [str(files[n]) for n in ("alps.jpg", "alps-edit.jpg", "dune.jpg", "dune_edit.jpg")]
    )
    page.get_by_text("2 pair(s) made from the file names").wait_for(state="attached")
    pairs = page.locator("li.pair")
    assert pairs.count() == 2
    chosen = [
        [
            o.strip()
            for o in pairs.nth(i)
            .locator("select")
            .evaluate_all("els => els.map(e => e.selectedOptions[0].textContent)")
        ]
        for i in range(2)
    ]
    assert sorted(chosen) == [["alps.jpg", "alps-edit.jpg"], ["dune.jpg", "dune_edit.jpg"]]
    check_screen(s, "teach", shots, findings)
    page.locator("input[name=model][value=dlut]").check()  # the fastest model keeps CI short
    page.get_by_role("button", name="Start learning").click()
    page.locator(".progress-area progress").wait_for()
    page.get_by_role("link", name="Apply it to photos").wait_for(timeout=300_000)
    summary = page.locator(".summary").inner_text()
    assert "ΔE" in summary
    assert "did not learn from" in summary or "held back" in summary
    check_screen(s, "teach-done", shots, findings)

    # Apply: preview in the browser at 0.5, measure the slider, then full resolution.
    page.get_by_role("link", name="Apply it to photos").click()
    page.wait_for_url("**/#/apply?style=*")
    page.get_by_role("button", name="Apply at full resolution").wait_for()
    for box in page.locator("input[name=photo]").all():
        box.uncheck()
    page.locator("label.check", has_text="street.jpg").locator("input").check()
    ready = page.locator("canvas.preview-canvas[data-ready='1'][data-image='street.jpg']")
    ready.wait_for(timeout=60_000)
    slider = page.locator("#strength")
    slider.focus()
    page.evaluate("() => { window.__picfilterPreview.times.length = 0; }")
    for _ in range(25):
        page.keyboard.press("ArrowLeft")  # keyboard: 100 -> 75
    for _ in range(25):
        page.keyboard.press("ArrowLeft")  # 75 -> 50
    assert slider.input_value() == "50"
    stats = page.evaluate(
        "() => { const p = window.__picfilterPreview;"
        " const t = [...p.times].sort((a, b) => a - b);"
        " return {kind: p.kind, n: t.length, median: t[t.length >> 1],"
        " p95: t[Math.floor(t.length * .95)], max: t[t.length - 1],"
        " w: document.querySelector('canvas.preview-canvas').width}; }"
    )
    REPORT["slider"] = stats
    # Reported, not asserted (speed goals are benchmarks): the goal is 50 ms at 1280 px.
    assert stats["n"] >= 50, stats
    assert stats["w"] == 1280, stats
    assert "Preview updated in" in page.locator("#preview-timing").inner_text()
    preview_png = page.locator("canvas.preview-canvas").evaluate("c => c.toDataURL('image/png')")
    check_screen(s, "apply", shots, findings)

    page.get_by_role("button", name="Apply at full resolution").click()
    link = page.get_by_role("link", name="Download street.jpg")
    link.wait_for(timeout=120_000)
    with page.expect_download() as dl:
        link.click()
    result_path = tmp_path / "result.jpg"
    dl.value.save_as(result_path)
    with page.expect_download() as dl_all:
        page.get_by_role("button", name="Download all (zip)").click()
    zip_path = tmp_path / "all.zip"
    dl_all.value.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert len(names) == 1, names
        assert names[0].endswith(".jpg"), names
        assert zf.read(names[0]) == result_path.read_bytes()
    check_screen(s, "apply-done", shots, findings)

    # The API's own apply of the same photo at the same strength: the same pixels.
    style_id = page.url.split("style=")[1].split("&")[0]
    headers = {"Authorization": f"Bearer {s.token()}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as api:
        images = api.get("/api/v1/images").json()["items"]
        street = next(i for i in images if i["filename"] == "street.jpg")
        job = api.post(
            f"/api/v1/styles/{style_id}/apply", json={"image_id": street["id"], "strength": 0.5}
        ).json()
        for _ in range(600):
            job = api.get(f"/api/v1/jobs/{job['id']}").json()
            if job["status"] in ("completed", "failed"):
                break
            page.wait_for_timeout(200)
        assert job["status"] == "completed", job
        own = httpx.get(job["result"]["result_url"], timeout=60).content
    mine, theirs = _pixels(result_path.read_bytes()), _pixels(own)
    assert mine.shape == theirs.shape
    assert int(np.abs(mine - theirs).max()) <= 1
    # the result row says how much of the photo the style's examples showed, as the API does
    share = job["result"]["coverage"]["unseen_share"]
    REPORT["unseen_share"] = share
    results_text = page.get_by_role("list", name="Results").inner_text()
    if share >= 0.05:
        percent = math.floor(100 * share + 0.5)  # JavaScript's Math.round
        assert f"{percent} % of this photo's colors were in none" in results_text
    else:
        assert "colors were in none" not in results_text
    # ...and the in-browser preview at 0.5 is close to it (same size photo, 8-bit LUT math).
    shown = _pixels(base64.b64decode(preview_png.split(",", 1)[1]))
    with Image.open(io.BytesIO(own)) as im:
        small = im.convert("RGB").resize(shown.shape[1::-1], Image.Resampling.BILINEAR)
    theirs = np.asarray(small).astype(np.int16)
    REPORT["preview_vs_server_mean_abs"] = float(np.abs(shown - theirs).mean())
    assert REPORT["preview_vs_server_mean_abs"] < 4.0

    # Export a .cube (formats from the API) and import it back as a public style.
    s.go(f"style/{style_id}")
    page.get_by_label("Format").select_option("cube")
    assert "Resolve" in page.locator("form", has_text="Export as a LUT file").inner_text()
    page.get_by_role("button", name="Export", exact=True).click()
    cube_link = page.get_by_role("link", name="Download warm-contrast_33.cube")
    cube_link.wait_for(timeout=120_000)
    with page.expect_download() as dl_cube:
        cube_link.click()
    cube = tmp_path / "warm.cube"
    dl_cube.value.save_as(cube)
    assert "LUT_3D_SIZE 33" in cube.read_text()
    # a HaldCLUT: the sizes become levels and the job is asked for a level
    export = page.locator("form", has_text="Export as a LUT file")
    export.get_by_label("Format").select_option("haldclut")
    assert export.get_by_label("Size").locator("option").first.inner_text() == (
        "level 8 (64 points per axis)"
    )
    assert "darktable" in export.inner_text()
    page.get_by_role("button", name="Export", exact=True).click()
    hald_link = page.get_by_role("link", name="Download warm-contrast_hald8.png")
    hald_link.wait_for(timeout=120_000)
    with page.expect_download() as dl_hald:
        hald_link.click()
    hald = tmp_path / "warm_hald8.png"
    dl_hald.value.save_as(hald)
    assert hald.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the ICC profile is offered (from the API's enum) with where it goes
    export.get_by_label("Format").select_option("icc")
    assert "Assign/Convert to Profile" in export.inner_text()
    assert export.get_by_label("Size").locator("option").first.inner_text() == "17 points per axis"
    export.get_by_label("Format").select_option("cube")
    check_screen(s, "style", shots, findings)

    # The owner renames the style and tags it (PATCH), on its page; it stays so after a reload.
    edit = page.locator("form", has_text="Edit this style")
    edit.get_by_label("Name").fill("Golden contrast")
    edit.get_by_label("Tags").fill("Warm, film")
    edit.get_by_role("button", name="Save changes").click()
    edit.get_by_text("Saved.").wait_for()
    page.locator("h1", has_text="Golden contrast").wait_for()
    page.reload()
    page.locator("h1", has_text="Golden contrast").wait_for()
    assert page.locator(".tags a").all_inner_texts() == ["warm", "film"]
    page.get_by_role("link", name="Learn it again from other photos").click()
    page.locator("h1", has_text="Learn “Golden contrast” again").wait_for()

    s.go("styles")
    imp = page.locator("form", has_text="Import a LUT file as a style")
    imp.get_by_label("LUT file").set_input_files(str(cube))
    imp.get_by_label("Name").fill("Warm imported")
    imp.get_by_label("Who can see it").select_option("public")
    imp.get_by_role("button", name="Import").click()
    page.get_by_text("Imported “Warm imported”.").wait_for()
    page.locator(".style-card", has_text="Warm imported").wait_for()
    check_screen(s, "styles", shots, findings)
    s.go("jobs")  # every job of the user, with its result still downloadable
    page.locator(".job-item", has_text="Exporting").get_by_role(
        "link", name="Download warm-contrast_33.cube"
    ).wait_for()
    assert page.locator(".job-item", has_text="Applying").count() >= 1
    check_screen(s, "jobs", shots, findings)
    assert not s.foreign_requests(), s.foreign_requests()
    assert not s.errors, s.errors

    # A second user: gallery order before and after rating, a comment, a fork.
    t = Session(browser, base)
    sign_up(t, "dorothea")
    t.go("community")
    cards = t.page.locator(".style-card h3")
    cards.first.wait_for()
    before = cards.all_inner_texts()
    assert sorted(before) == ["Golden contrast", "Warm imported"], before
    last = before[-1]  # unrated styles tie; five stars must lift this one to the top
    check_screen(t, "community", shots, findings)
    t.page.get_by_role("link", name=last).click()
    t.page.get_by_text("Your rating").wait_for()
    t.page.locator("label.star", has_text="5 ★").click()
    t.page.get_by_text("(1)").wait_for()
    t.page.get_by_label("Add a comment").fill("Lovely warm tones <b>not bold</b>")
    t.page.get_by_role("button", name="Post comment").click()
    t.page.locator(".comment", has_text="Lovely warm tones <b>not bold</b>").wait_for()
    # ...edits it, then posts and deletes another (the author's own comment tools).
    t.page.get_by_role("button", name="Edit your comment").click()
    t.page.get_by_label("Changed comment").fill("Lovely warm tones <b>not bold</b>, soft greens")
    t.page.get_by_role("button", name="Save comment").click()
    t.page.locator(".comment", has_text="soft greens").get_by_text("(edited)").wait_for()
    t.page.get_by_label("Add a comment").fill("Second thought")
    t.page.get_by_role("button", name="Post comment").click()
    second = t.page.locator(".comment", has_text="Second thought")
    second.get_by_role("button", name="Delete your comment").click()
    second.wait_for(state="detached")
    rated_url = t.page.url
    check_screen(t, "style-community", shots, findings)
    t.page.get_by_role("button", name="Fork (make my own copy)").click()
    t.page.get_by_text("by dorothea").first.wait_for()
    t.go("community")
    cards.first.wait_for()
    t.page.wait_for_timeout(300)
    after = t.page.locator(".style-card h3").all_inner_texts()
    assert after[0] == last, (before, after)
    assert after != before
    assert not t.foreign_requests(), t.foreign_requests()
    assert not t.errors, t.errors

    # The owner sees the comment; every screen passed axe-core.
    s.page.goto(rated_url)
    page.locator(".comment", has_text="Lovely warm tones").wait_for()
    REPORT["axe"] = {k: len(v) for k, v in findings.items()}
    print("\nweb client e2e:", json.dumps(REPORT, indent=1))
    bad = {k: v for k, v in findings.items() if v}
    assert not bad, json.dumps(bad, indent=1)
    t.close()
    s.close()


def test_session_renews_silently_and_errors_read_as_words(web_server: str, browser: Any) -> None:
    """A rejected access token is renewed with the refresh token without the user noticing;
    a taken username, a wrong password and the login rate limit (a real 429 from the server,
    whose limits are the defaults) each read as a sentence, the 429 with its wait."""
    s = Session(browser, web_server)
    page = s.page
    sign_up(s, "renewer")
    page.evaluate(
        "() => { const k = 'picfilter.session'; const v = JSON.parse(localStorage.getItem(k));"
        " v.access = 'not-a-valid-token'; localStorage.setItem(k, JSON.stringify(v)); }"
    )
    page.reload()
    page.get_by_role("heading", name="All photos").wait_for()
    page.get_by_text("No photos yet").wait_for()
    assert s.token() != "not-a-valid-token"

    page.get_by_role("link", name="renewer").click()
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("heading", name="Create an account").wait_for()
    form = page.locator("form", has=page.get_by_role("heading", name="Create an account"))
    form.get_by_label("Email").fill("someone-else@example.com")
    form.get_by_label("Username").fill("renewer")
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Sign up").click()
    taken = form.get_by_role("alert")
    taken.wait_for()
    assert "That cannot be done right now" in taken.inner_text()

    login = page.locator("form", has=page.get_by_role("heading", name="Log in"))
    login.get_by_label("Email").fill("renewer@example.com")
    login.get_by_label("Password").fill("wrong-password")
    alert = login.get_by_role("alert")
    texts = []
    for _ in range(15):
        login.get_by_role("button", name="Log in").click()
        page.wait_for_timeout(300)
        texts.append(alert.inner_text())
        if "Too many requests" in texts[-1]:
            break
    assert texts[0] == "That email and password do not match an account.", texts
    assert "Too many requests: please wait" in texts[-1], texts
    assert not s.foreign_requests()
    assert not s.errors, s.errors
    s.close()
