"""The documentation site builds with strict link checking, and says what the code does: every setting
is in the settings reference, and the troubleshooting page lists every log event and every sentence of
jobs/wording.py. A new message or event without its line on the page fails here."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from tests.conftest import ROOT
from tests.discord_picture import message

TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
PICTURES = ROOT / "docs" / "pictures"  # what Discord shows, for the user guide: remade by the test below
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ALICE = 2001
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")  # structlog event names: snake_case, at least two words


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(folder)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return folder


def log_events() -> dict[str, str]:
    """Every structlog event the bot logs (`log.info("job_delivered", ...)`) -> the file that logs it."""
    found = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in (".venv", "tests", "bench", "docs", ".git", "site"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
                    and _is_logger(node.func.value) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and EVENT.match(node.args[0].value)):
                found.setdefault(node.args[0].value, str(relative))
    return found


def _is_logger(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.lower().endswith(("log", "logger"))


def wording_sentences() -> list[str]:
    """The words of jobs/wording.py people read: every string of four or more words, docstrings left out
    (an f-string's literal parts count one by one)."""
    tree = ast.parse((ROOT / "jobs" / "wording.py").read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and ast.get_docstring(node)}
    texts = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    return list(dict.fromkeys(_plain(text) for text in texts if len(text.split()) >= 4))


# what the cogs answer with: a string (or an f-string's literal parts) given to one of these calls
ANSWERS = {"send_message", "send", "edit_message", "edit_original_response", "tell", "limit", "cannot_use", "not_queued"}


def cog_answers() -> dict[str, str]:
    """The words of four or more the cogs send people directly (not through jobs/wording.py) -> the file."""
    found = {}
    for path in sorted((ROOT / "cogs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node.func, "attr", getattr(node.func, "id", "")) if isinstance(node, ast.Call) else ""
            if name not in ANSWERS:
                continue
            for value in [*node.args, *(keyword.value for keyword in node.keywords if keyword.arg == "content")]:
                parts = value.values if isinstance(value, ast.JoinedStr) else [value]
                for part in parts:
                    if isinstance(part, ast.Constant) and isinstance(part.value, str) and len(_plain(part.value).split()) >= 4:
                        found.setdefault(_plain(part.value), path.name)
    return found


def _plain(text: str) -> str:
    """Lower case, single spaces, no punctuation at either end, no Markdown emphasis or code marks."""
    text = " ".join(text.replace("`", "").replace("*", "").split()).lower()
    return re.sub(r"^[^a-z0-9/]+|[^a-z0-9)]+$", "", text)


def test_the_site_builds_with_every_page(site):
    for page in ("index.html", "faq/index.html", "troubleshooting/index.html", "operator/settings/index.html",
                 "user/making-images/index.html", "operator/backup-and-upgrades/index.html"):
        assert (site / page).is_file(), page


def test_every_setting_is_in_the_settings_reference(site):
    page = (site / "operator" / "settings" / "index.html").read_text(encoding="utf-8")
    missing = [name.upper() for name in Settings.model_fields if f"<code>{name.upper()}</code>" not in page]
    assert not missing, f"not in the settings reference: {missing}"
    assert "<code>1800.0</code>" in page  # JOB_TIMEOUT's default, rendered from the field


def test_every_log_event_is_on_the_troubleshooting_page():
    events = log_events()
    assert len(events) > 100 and "job_delivered" in events  # the scan finds the bot's events
    page = TROUBLESHOOTING.read_text(encoding="utf-8")
    missing = sorted(f"{name} ({where})" for name, where in events.items() if f"`{name}`" not in page)
    assert not missing, f"log events without a line in docs/troubleshooting.md: {missing}"


def test_the_troubleshooting_page_names_no_event_the_code_has_left():
    page = TROUBLESHOOTING.read_text(encoding="utf-8").split("## Log events", 1)[1]
    listed = {name for line in page.splitlines() if line.startswith("| `")
              for name in re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])}
    gone = sorted(listed - set(log_events()))
    assert not gone, f"docs/troubleshooting.md lists events the code no longer logs: {gone}"


def test_every_sentence_people_read_is_on_the_troubleshooting_page():
    sentences = wording_sentences()
    assert len(sentences) > 20
    page = _plain(TROUBLESHOOTING.read_text(encoding="utf-8"))
    missing = [text for text in sentences if text not in page]
    assert not missing, f"sentences of jobs/wording.py not in docs/troubleshooting.md: {missing}"


def test_every_answer_of_the_cogs_is_on_the_troubleshooting_page():
    answers = cog_answers()
    assert len(answers) > 40 and "only moderators can do that" in answers  # the scan finds the cogs' answers
    page = _plain(TROUBLESHOOTING.read_text(encoding="utf-8"))
    missing = sorted(f"{text} ({where})" for text, where in answers.items() if text not in page)
    assert not missing, f"answers of cogs/ not in docs/troubleshooting.md: {missing}"


def discord_messages() -> dict[str, tuple[str, list[str]]]:
    """The bot's own messages (its wording, embed and buttons), each as a page, with what a person reads on it."""
    from comfy.types import ExecutionFailed
    from jobs import wording
    from store import Generation
    from ui.buttons import cancel_view, result_view
    from ui.views import result_embed

    params = {"prompt": "a red fox curled up in fresh snow", "negative_prompt": "blurry", "model": "sdxl.safetensors",
              "width": 1024, "height": 1024, "seed": 1234, "steps": 25, "cfg": 7.0, "sampler": "euler",
              "waited": 12, "ran": 10}
    result = Generation(id=42, job_id=7, kind="txt2img", user_id=ALICE, guild_id=1, channel_id=2, params=params,
                        files=["fox.png"], server="gpu-1", duration=22)
    out_of_memory = ExecutionFailed("3", "KSampler", "torch.OutOfMemoryError", "CUDA out of memory")
    names = {ALICE: "alice"}
    return {
        "result": (message(wording.ready("txt2img", ALICE), result_embed(result).to_dict(),
                           result_view(result).to_components(), picture=_fox(), names=names),
                   ["@alice, your image is ready.", "Upscale 2x", "Reroll", "Zoom out 2x", "Favorite", "Seed", "1234"]),
        "waiting": (message(wording.waiting("txt2img", 2, eta=40), components=cancel_view(7).to_components()),
                    ["Waiting for your image: 2 jobs are ahead of yours", "Cancel"]),
        "failed": (message(wording.failed("txt2img", wording.failure(out_of_memory), ALICE), names=names),
                   ["@alice, your image could not be made: the server ran out of GPU memory."]),
    }


def _fox() -> str:
    """A stand-in result picture (a gradient), as a data: URL."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fade = Image.linear_gradient("L").resize((300, 300))
    Image.merge("RGB", (fade.point(lambda v: 255 - v // 2), fade.point(lambda v: 90 + v // 3), fade.rotate(90))).save(
        buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_pictures_of_what_discord_shows(tmp_path):
    """The user guide's pictures: the bot's real messages in a Discord-like page, in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run `make browser`", pytrace=False)
    pages = discord_messages()  # views need the running loop
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--window-size=820,1400", "--hide-scrollbars",
                     f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(15)
        PICTURES.mkdir(exist_ok=True)
        for name, (page, seen) in pages.items():
            (tmp_path / f"{name}.html").write_text(page, encoding="utf-8")
            driver.get((tmp_path / f"{name}.html").as_uri())
            shown = driver.find_element(By.ID, "message")
            for words in seen:
                assert words in shown.text, (name, words, shown.text)
            assert shown.screenshot(str(PICTURES / f"{name}.png"))
    finally:
        driver.quit()
