"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real server.

A screenshot of each run lands in test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from tests.test_serve import example_photos

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A fresh page on the server; fails the test on console errors or on any request off loopback.
    A test marked `screen(device_scale_factor=2)` gets a HiDPI screen, one marked `readerless` the
    server whose reader failed to load."""
    server = request.getfixturevalue("readerless_server" if request.node.get_closest_marker("readerless")
                                     else "server")
    screen = request.node.get_closest_marker("screen")
    context = browser.new_context(**{"viewport": {"width": 1000, "height": 860}, **(screen.kwargs if screen else {})})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not re.search(r"status of (400|404|502)", m.text) else None)   # shown to the user
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"off-loopback request: {r.url}")
            if urlparse(r.url).hostname not in ("127.0.0.1", "localhost") else None)
    page.goto(server + "/")
    yield page
    context.close()
    assert not problems, problems


def test_page_reads_an_uploaded_photo(page, svhn_dir, number_reader):
    from playwright.sync_api import expect

    photo, expected = next(((path, label) for path, label in example_photos(svhn_dir, 40)
                            if number_reader.read(path).number == label), (None, None))
    assert photo is not None, "the reader got none of the first 40 test photos right"
    expect(page.get_by_role("tab", name="House number")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#unavailable")).to_be_hidden()
    page.locator("#file").set_input_files(str(photo))
    expect(page.get_by_test_id("answer")).to_have_text(expected, timeout=15_000)
    expect(page.locator("#confidence")).to_contain_text("%")
    expect(page.locator("#time")).to_contain_text("ms")
    expect(page.locator("#photo")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)


@pytest.mark.readerless
def test_page_without_a_reader_says_so_and_reads_single_digits(page, crops, digit_checkpoint, tmp_path):
    from playwright.sync_api import expect

    from housenum.predict import DigitRecognizer

    expect(page.locator("#unavailable")).to_contain_text("reader is unavailable")
    expect(page.get_by_role("tab", name="Single digit")).to_have_attribute("aria-selected", "true")
    recognizer = DigitRecognizer(digit_checkpoint)
    i = next(i for i in range(200) if recognizer.predict([crops["X"][i]])[0].digit == crops["y"][i])
    photo = tmp_path / f"digit_{crops['y'][i]}.png"
    Image.fromarray(crops["X"][i]).save(photo)
    page.locator("#file").set_input_files(str(photo))
    expect(page.get_by_test_id("answer")).to_have_text(str(crops["y"][i]), timeout=15_000)
    page.get_by_role("tab", name="House number").click()
    page.locator("#file").set_input_files(str(photo))
    expect(page.get_by_role("status")).to_contain_text("reader is unavailable")


def test_page_keyboard_examples_and_errors(page, tmp_path):
    from playwright.sync_api import expect

    tabs = page.get_by_role("tab")
    expect(tabs).to_have_count(2)
    tabs.first.focus()
    page.keyboard.press("ArrowRight")
    expect(tabs.nth(1)).to_be_focused()
    expect(tabs.nth(1)).to_have_attribute("aria-selected", "true")
    for key, tab in (("Home", tabs.first), ("End", tabs.nth(1))):   # the WAI-ARIA tabs pattern
        page.keyboard.press(key)
        expect(tab).to_be_focused()
        expect(tab).to_have_attribute("aria-selected", "true")

    example = page.get_by_role("button", name="Read example photo").first
    expect(example).to_be_visible()
    example.click()
    expect(page.get_by_test_id("answer")).to_have_text(re.compile(r"^\d$"), timeout=15_000)  # digits tab: one digit

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a photo")
    page.locator("#file").set_input_files(str(not_an_image))
    expect(page.get_by_role("status")).to_contain_text("not an image")
    expect(page.locator("#result")).to_be_hidden()


def test_page_says_when_an_example_is_gone_and_when_an_error_is_not_json(page, svhn_dir):
    from playwright.sync_api import expect

    example = page.get_by_role("button", name="Read example photo").first
    expect(example).to_be_visible()
    page.route("**/examples/**", lambda route: route.fulfill(   # removed from the server after the page loaded
        status=404, content_type="application/json", body='{"error": {"code": "not_found", "message": "gone"}}'))
    example.click()
    expect(page.get_by_role("status")).to_contain_text("is no longer on the server")
    page.route(re.compile(r"/v1/(numbers|digits)$"), lambda route: route.fulfill(   # a proxy's own error page
        status=502, content_type="text/html", body="<html><body>Bad gateway</body></html>"))
    page.locator("#file").set_input_files(str(svhn_dir / "numbers" / "images" / "test_2.png"))
    expect(page.get_by_role("status")).to_contain_text("The server answered 502.")


def wait_for(page, condition, what: str, seconds: float = 15) -> None:
    """Let the page run until `condition()` holds (Playwright's events are handled while it waits)."""
    for _ in range(int(seconds * 50)):
        if condition():
            return
        page.wait_for_timeout(20)
    pytest.fail(f"{what} did not come within {seconds} s")


def test_page_drops_an_answer_to_a_tab_left_while_it_was_read(page, svhn_dir, crops, tmp_path):
    """A photo sent as a house number, then the Single digit tab chosen before the answer came: the
    late answer must not show under the digit tab (it once read "Digit: undefined"). Replies are
    held until the tab has changed and a digit is queued, so no timing decides the order."""
    from playwright.sync_api import expect

    held = []
    page.route("**/v1/numbers", lambda route: held.append(route))   # unanswered until released
    photo = svhn_dir / "numbers" / "images" / "test_2.png"   # the number 210
    page.locator("#file").set_input_files(str(photo))
    wait_for(page, lambda: held, "the house-number request")
    page.get_by_role("tab", name="Single digit").click()
    digit = tmp_path / "digit.png"
    Image.fromarray(crops["X"][0]).save(digit)
    page.locator("#file").set_input_files(str(digit))   # queued behind the held read
    expect(page.get_by_role("status")).to_contain_text("digit.png is next")
    queued = []
    page.route(re.compile(r"/v1/digits\b"), lambda route: queued.append(route))   # with its ?top_k
    held[0].continue_()
    wait_for(page, lambda: queued, "the queued digit request")   # sent once the late answer is handled
    expect(page.locator("#result")).to_be_hidden()
    queued[0].continue_()
    expect(page.get_by_role("status")).to_contain_text("Read digit.png", timeout=15_000)
    expect(page.get_by_test_id("answer")).to_have_text(re.compile(r"^\d$"))   # the digit's answer, not 210's
    expect(page.get_by_test_id("answer")).not_to_have_text("undefined")


@pytest.mark.screen(device_scale_factor=2)
def test_page_draws_the_photo_at_the_screens_resolution(page, svhn_dir):
    """On a HiDPI screen the canvas keeps a pixel per screen pixel (boxes and labels were blurred)."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Single digit").click()  # there with or without the reader
    page.locator("#file").set_input_files(str(example_photos(svhn_dir, 1)[0][0]))
    expect(page.locator("#photo")).to_be_visible(timeout=15_000)
    backing, css = page.locator("#photo").evaluate(
        "c => [[c.width, c.height], [c.clientWidth, c.clientHeight]]")  # client: without the border
    assert css[0] > 0 and css[1] > 0
    assert backing[0] == pytest.approx(2 * css[0], abs=2) and backing[1] == pytest.approx(2 * css[1], abs=2)


def test_page_says_what_it_did_with_several_dropped_files_and_with_dropped_text(page, crops, tmp_path):
    """Two files dropped: the first is read and the status says the other was left; text: a message."""
    import io

    from playwright.sync_api import expect

    page.get_by_role("tab", name="Single digit").click()   # there with or without the reader
    png = io.BytesIO()
    Image.fromarray(crops["X"][0]).save(png, format="PNG")
    dropped = page.evaluate_handle("""(bytes) => {
        const dt = new DataTransfer();
        for (const name of ["first.png", "second.png"])
            dt.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
        return dt; }""", list(png.getvalue()))
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    expect(page.get_by_role("status")).to_have_text(
        "Read first.png (the first of 2 dropped: the page reads one image at a time).", timeout=15_000)
    expect(page.get_by_test_id("answer")).to_have_text(re.compile(r"^\d$"))
    text = page.evaluate_handle("() => { const dt = new DataTransfer(); dt.setData('text/plain', '123'); return dt; }")
    page.dispatch_event("#drop", "drop", {"dataTransfer": text})
    expect(page.get_by_role("status")).to_have_text(
        "Nothing to read: drop an image file (text and links cannot be read).")


def test_page_drops_a_pick_queued_before_a_tab_switch(page, svhn_dir):
    """A photo picked while another is read, then the Single digit tab chosen: the queued photo was
    picked for the house-number reader, so the digit model must not read it (it once said "Digit 0")."""
    from playwright.sync_api import expect

    held, digits = [], []
    page.route("**/v1/numbers", lambda route: held.append(route))   # unanswered until released
    page.on("request", lambda r: digits.append(r.url) if "/v1/digits" in r.url else None)
    images = svhn_dir / "numbers" / "images"
    page.locator("#file").set_input_files(str(images / "test_2.png"))
    wait_for(page, lambda: held, "the house-number request")
    page.locator("#file").set_input_files(str(images / "test_3.png"))
    expect(page.get_by_role("status")).to_contain_text("test_3.png is next")
    page.get_by_role("tab", name="Single digit").click()
    held[0].continue_()
    wait_for(page, lambda: not page.evaluate("() => state.busy"), "the end of the held read")
    assert not digits, digits
    expect(page.get_by_role("status")).to_have_text("")
    expect(page.locator("#result")).to_be_hidden()


def test_page_reads_a_file_dropped_beside_the_zone_and_one_dropped_on_it_once(page, crops):
    """A file let go outside the dashed zone (say on the last answer) must be taken by the page:
    a drop nobody cancels makes the browser open the file in place of the page."""
    import io

    from playwright.sync_api import expect

    page.get_by_role("tab", name="Single digit").click()   # there with or without the reader
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    png = io.BytesIO()
    Image.fromarray(crops["X"][0]).save(png, format="PNG")
    drag = """([where, name, bytes]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
        return ["dragenter", "dragover", "drop"].map((type) => {
            const event = new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true });
            document.querySelector(where).dispatchEvent(event);
            return event.defaultPrevented; }); }"""
    assert page.evaluate(drag, ["footer", "beside.png", list(png.getvalue())]) == [True, True, True]
    expect(page.get_by_role("status")).to_have_text("Read beside.png.", timeout=15_000)
    assert len(sent) == 1, sent
    assert page.evaluate(drag, ["#drop", "zone.png", list(png.getvalue())]) == [True, True, True]
    expect(page.get_by_role("status")).to_have_text("Read zone.png.", timeout=15_000)
    assert len(sent) == 2, sent   # a second read of it would be queued at once, and sent before this status


def test_page_says_there_is_nothing_to_read_in_pasted_text_unless_pasted_into_a_text_field(page):
    from playwright.sync_api import expect

    paste = """(where) => {
        const dt = new DataTransfer();
        dt.setData("text/plain", "123");
        document.querySelector(where).dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true })); }"""
    page.evaluate("() => document.querySelector('footer').append(Object.assign(document.createElement('input'), "
                  "{ id: 'typed' }))")   # a search box, say: text pasted there is for it
    page.evaluate(paste, "#typed")
    expect(page.get_by_role("status")).to_have_text("")
    page.evaluate(paste, "body")
    expect(page.get_by_role("status")).to_have_text("Nothing to read: paste an image (text cannot be read).")


@pytest.mark.screen(viewport={"width": 360, "height": 740}, is_mobile=True)
def test_docs_fit_a_phone_and_name_a_response_that_is_not_json(page):
    """/docs on a 360 px phone: no sideways page scroll (a parameter table was 380 px wide); and
    /metrics answers Prometheus text, which the page names rather than showing a JSON shape."""
    from playwright.sync_api import expect

    page.goto(page.url.rstrip("/") + "/docs")
    metrics = page.locator("section.op", has_text="/metrics")
    expect(metrics).to_contain_text("text/plain")   # all operations are drawn at once
    width, screen = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-docs-phone.png"), full_page=True)
    assert width <= screen, f"/docs is {width} px wide on a {screen} px screen"
