"""The API's examples, run as a program would run them: examples/python/generate.py and
examples/js/generate.mjs against the running bot's API on 127.0.0.1 (a key made with /admin apikey create,
the job run on the fake ComfyUI), each making an image, saving it and checking its webhook's signature.
And examples/postman_collection.json is what web/postman.py makes of the API's document."""

from __future__ import annotations

import asyncio
import json
import re
import runpy
import shutil
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.bot_harness import bot_settings
from tests.conftest import ROOT
from tests.web.test_api_bot import admin, free_port
from web import postman, webhooks

NODE = shutil.which("node") or "node"  # Node.js 18 or later: `make node` installs it
RUN = {"python": [sys.executable, str(ROOT / "examples" / "python" / "generate.py")],
       "js": [NODE, str(ROOT / "examples" / "js" / "generate.mjs")]}
TIMEOUT = 60  # seconds the example may take, at most


async def run_example(command: list[str], *args: str) -> tuple[int, str, str]:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} not found: run `make node` (apt-get install nodejs)", pytrace=False)
    process = await asyncio.create_subprocess_exec(*command, *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{command[-1]} did not finish in {TIMEOUT} s") from None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("language", sorted(RUN))
async def test_the_example_makes_an_image_and_checks_its_webhook(language, comfy, discord_fake, running, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=base, webhook_private_ok=True))
    (key,) = re.findall(r"`(cfb_[^`]+)`", await admin(discord_fake, "apikey create", {"name": "example"}))
    out = tmp_path / "saved"
    code, said, errors = await run_example(RUN[language], "--api", base, "--key", key, "--prompt", "a harbour",
                                           "--size", "64", "--out", str(out), "--listen", "127.0.0.1:0",
                                           "--poll", "0.1", "--timeout", str(TIMEOUT - 10))
    assert code == 0, errors
    lines = said.splitlines()
    job_id = int(re.fullmatch(r"queued generation (\d+)", lines[1])[1])
    assert lines[0].startswith("webhook set to http://127.0.0.1:") and "state: done" in lines
    assert lines[-1] == f"webhook generation.done for generation {job_id}: signature verified"
    (saved,) = out.iterdir()
    assert saved.name == f"generation-{job_id}-0.png" and f"saved {saved} (" in said
    with Image.open(saved) as image:
        assert image.size == (64, 64)


async def test_both_verifiers_accept_the_bots_signature_and_nothing_else():
    """What each example's verify() says of web/webhooks.py's signature, a changed body, a wrong secret
    and an old timestamp."""
    now = int(time.time())
    body, secret = b'{"event":"generation.done","id":7}', "whsec_example"
    cases = [(secret, str(now), body, webhooks.sign(secret, str(now), body)),
             (secret, str(now), body + b" ", webhooks.sign(secret, str(now), body)),
             ("whsec_other", str(now), body, webhooks.sign(secret, str(now), body)),
             (secret, str(now - 900), body, webhooks.sign(secret, str(now - 900), body)),
             (secret, str(now), body, "v1=00," + webhooks.sign(secret, str(now), body))]
    expected = [True, False, False, False, True]
    python = runpy.run_path(RUN["python"][1])["verify"]
    assert [python(s, t, b, sig, now) for s, t, b, sig in cases] == expected
    script = ("import { verify } from %s; const cases = JSON.parse(process.argv[1]);"
              "console.log(JSON.stringify(cases.map(([s, t, b, sig]) => verify(s, t, Buffer.from(b), sig, %d))));"
              % (json.dumps(Path(RUN["js"][1]).as_uri()), now))
    code, said, errors = await run_example([NODE, "--input-type=module", "-e", script],
                                           json.dumps([[s, t, b.decode(), sig] for s, t, b, sig in cases]))
    assert code == 0 and json.loads(said) == expected, errors


async def test_a_wrong_key_is_reported_in_the_apis_words(comfy, discord_fake, running, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=base))
    for language, command in RUN.items():
        code, said, errors = await run_example(command, "--api", base, "--key", "cfb_wrong", "--listen", "127.0.0.1:0",
                                               "--timeout", "10")
        assert code == 1 and "401" in errors and "webhook set" not in said, (language, errors)


async def test_the_postman_collection_is_made_from_the_served_document(comfy, discord_fake, running, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=base))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{base}/api/v1/openapi.json") as answer:
            document = await answer.json()
    committed = (ROOT / "examples" / "postman_collection.json").read_text()
    assert committed == postman.render(document), "run `python -m web.postman` and commit the file"
    assert postman.render(postman.default_document()) == committed
    names = [item["name"] for item in json.loads(committed)["item"]]
    assert len(names) == 9 and "Queue a generation" in names and "Cancel a generation" in names
