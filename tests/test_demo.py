"""The playground (demo.py): its callbacks against MonoCLIP, feature reuse, messages, the point cloud, and the page
itself in headless Chromium."""
import os
import shutil
import socket
import time

import numpy as np
import pytest
from PIL import Image

import photos
import predict
import visualize
from monoclip import MonoCLIP

from conftest import optional

demo = optional("demo")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "room.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def playground(checkpoint):
    return demo.Playground(MonoCLIP(checkpoint, device="cpu"))


SETTINGS = dict(words="near, middle, far", bins="1, 2, 4", template="This {} is {}", objects="object",
                temperature=0.5, features="paper", flip=True, focal=300.0)


def test_render_equals_monoclip_and_edits_reuse_the_image_features(playground, photo, checkpoint):
    image = Image.open(photo)
    passes = playground.image_passes
    depth_picture, weights, shares, (png, ply) = playground.render(image, **SETTINGS)
    reference = MonoCLIP(checkpoint, device="cpu", depth_classes=["near", "middle", "far"], bins=[1, 2, 4],
                         temperature=0.5)
    expected = photos.predict_depth(reference, image.convert("RGB"), 544, "imagenet")  # (240, 320) metres
    saved = np.asarray(Image.open(png), np.float64) / 1000.0
    assert np.abs(saved - expected).max() <= 0.0005 + 1e-6  # the PNG's millimetre rounding
    assert set(shares) == {"near", "middle", "far"} and sum(shares.values()) == pytest.approx(1.0)
    assert depth_picture.shape == (240 + visualize.BAR_HEIGHT, 320, 3)
    assert [caption.split(" (")[0] for _, caption in weights] == ["'near'", "'middle'", "'far'"]
    assert all(picture.shape == (120, 160, 3) for picture, _ in weights)
    for edit in (dict(words="close, far", bins="1, 3"), dict(temperature=2.0), dict(template="A {} that is {}"),
                 dict(objects="wall, floor")):
        playground.render(image, **{**SETTINGS, **edit})
    assert playground.image_passes == passes + 1  # four edits: the text tower only
    playground.render(image, **{**SETTINGS, "features": "maskclip"})
    playground.render(image.rotate(90), **SETTINGS)
    assert playground.image_passes == passes + 3  # a new feature or a new image runs the image tower


@pytest.mark.parametrize("edit, message", [
    (dict(bins="1, 2"), "2 bins [1.0, 2.0] for 3 depth words"),
    (dict(bins="1, x, 3"), "are not comma-separated numbers"),
    (dict(words="near, , far"), "have an empty item"),
    (dict(temperature=0), "temperature 0.0 must be a number > 0"),
    (dict(template="This {} is close"), "needs exactly two empty {} slots"),
    (dict(focal=0), "focal length 0 must be a positive number"),
    (dict(features="tokens"), "features='tokens' needs a ViT CLIP"),
])
def test_bad_settings_are_messages(playground, photo, edit, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("{}", r"\{\}")):
        playground.render(Image.open(photo), **{**SETTINGS, **edit})
    playground.model.features = "paper"


def test_no_image_is_a_message(playground):
    with pytest.raises(ValueError, match="upload an image first"):
        playground.render(None, **SETTINGS)


def read_ply(path):
    data = open(path, "rb").read()
    header, body = data.split(b"end_header\n", 1)
    count = int([line for line in header.decode().splitlines() if line.startswith("element vertex")][0].split()[-1])
    points = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                                        ("b", "u1")])
    return count, points


def test_predict_ply_is_the_png_back_projected(photo, checkpoint, tmp_path):
    predict.main([str(photo), "-o", str(tmp_path), "--clip_model", checkpoint, "--device", "cpu", "--ply",
                  "--focal", "250"])
    count, points = read_ply(tmp_path / "room_depth.ply")
    depth_mm = np.asarray(Image.open(tmp_path / "room_depth.png"), np.float64)
    assert count == len(points) == 240 * 320
    z = points["z"].reshape(240, 320)
    assert np.abs(z - depth_mm / 1000.0).max() <= 0.0005 + 1e-6
    v, u = np.mgrid[0:240, 0:320]
    np.testing.assert_allclose(points["x"].reshape(240, 320), (u - 159.5) * z / 250, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(points["y"].reshape(240, 320), (v - 119.5) * z / 250, rtol=1e-5, atol=1e-6)
    rgb = np.asarray(Image.open(photo))
    assert (points["r"] == rgb[..., 0].ravel()).all() and (points["b"] == rgb[..., 2].ravel()).all()


# ---------------------------------------------------------------- the page in a real browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page_url(playground):
    optional("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page = demo.build_page(playground)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}"
    page.close()


def wait_for_change(locator, old, seconds=60):
    """The attribute 'src' of locator once it is set and differs from old."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if locator.count():
            src = locator.first.get_attribute("src")
            if src and src != old:
                return src
        time.sleep(0.2)
    raise AssertionError(f"{locator} did not change within {seconds} s")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")
def test_page_in_headless_chromium(page_url, tmp_path, playground):
    sync_api = optional("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(page_url)
        passes = playground.image_passes
        page.locator("#image input[type=file]").set_input_files(os.path.join(demo.EXAMPLES, "synthetic_room.jpg"))
        depth, weights = page.locator("#depth img"), page.locator("#weights img")
        first_depth, first_weights = wait_for_change(depth, None), wait_for_change(weights, None)
        page.locator("#words textarea").fill("close, far")
        page.locator("#bins textarea").fill("1, 5")
        page.locator("#update").click()
        assert wait_for_change(depth, first_depth) != first_depth
        assert wait_for_change(weights, first_weights) != first_weights
        assert playground.image_passes == passes + 1  # the edit ran the text tower only
        page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
        page.locator("#bins textarea").fill("1, 2, 3")
        page.locator("#update").click()
        message = page.get_by_text("3 bins [1.0, 2.0, 3.0] for 2 depth words").first
        message.wait_for(timeout=30000)
        page.screenshot(path=str(tmp_path / "playground_error.png"), full_page=True)
        page.locator("#bins textarea").fill("1, 4")  # the page stays usable after the message
        page.locator("#update").click()
        wait_for_change(depth, None)
        if os.environ.get("DEPTHCLIP_SCREENSHOT"):  # docs/playground.png is made this way
            shutil.copy(tmp_path / "playground.png", os.environ["DEPTHCLIP_SCREENSHOT"])
            shutil.copy(tmp_path / "playground_error.png", os.environ["DEPTHCLIP_SCREENSHOT"][:-4] + "_error.png")
        browser.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")
def test_page_computes_by_itself(page_url, playground):
    """A clicked example computes without the button; Enter in the temperature updates; typed bins turn the bin
    preset to 'custom'."""
    sync_api = optional("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(page_url)
        depth = page.locator("#depth img")
        page.locator("button.gallery-item").last.click()  # an example
        first = wait_for_change(depth, None, seconds=40)
        page.locator("#temperature input").fill("2")
        page.locator("#temperature input").press("Enter")
        assert wait_for_change(depth, first, seconds=40) != first
        page.locator("#bins textarea").fill("1, 2, 2.5, 3, 3.5, 4, 9")
        page.locator("#bins textarea").press("Tab")
        page.wait_for_function("document.querySelector('#bin_preset input').value === 'custom'", timeout=20000)
        browser.close()
