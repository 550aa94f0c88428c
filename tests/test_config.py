"""Settings: defaults, environment, and the one-line exit for a bad value."""

import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings, load_settings, redact_url

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_readme(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = Settings()
    assert settings.comfyui_url == "http://127.0.0.1:8188"
    assert settings.workflows_dir == Path("workflows") and settings.workflow_set == "default"
    assert settings.outputs_dir == Path("outputs") and settings.output_limit == 100
    assert settings.data_dir == Path("data")
    assert settings.discord_token is None


def test_environment_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("COMFYUI_URL=http://10.0.0.5:8188/\nOUTPUT_LIMIT=7\n")
    monkeypatch.setenv("WORKFLOW_SET", "selftest")
    settings = Settings()
    assert settings.comfyui_url == "http://10.0.0.5:8188"
    assert settings.output_limit == 7
    assert settings.workflow_dir() == Path("workflows/selftest")


def test_blank_secrets_are_not_set(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DISCORD_TOKEN=\nCOMFYUI_AUTH_TOKEN=  \n")
    settings = Settings()
    assert settings.discord_token is None and settings.comfyui_headers() == {}


def test_secrets_are_masked(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def.ghi")
    monkeypatch.setenv("COMFYUI_AUTH_TOKEN", "Bearer s3cret")
    settings = Settings()
    shown = settings.described()
    assert shown["DISCORD_TOKEN"] == "(set, hidden)"
    assert "s3cret" not in str(shown) and "abc.def" not in repr(settings)
    assert settings.comfyui_headers() == {"Authorization": "Bearer s3cret"}


def test_url_passwords_are_masked_in_the_listing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMFYUI_URL", "http://alice:pa55word@10.0.0.5:8188")
    monkeypatch.setenv("COMFYUI_URLS", '["http://bob:hunter22@gpu1:8188", "https://gpu2:8188"]')
    shown = Settings().described()
    assert shown["COMFYUI_URL"] == "http://alice:***@10.0.0.5:8188"
    assert shown["COMFYUI_URLS"] == "['http://bob:***@gpu1:8188', 'https://gpu2:8188']"
    assert "pa55word" not in str(shown) and "hunter22" not in str(shown)


@pytest.mark.parametrize("url, shown", [
    ("http://127.0.0.1:8188", "http://127.0.0.1:8188"),
    ("http://alice@gpu1:8188", "http://alice@gpu1:8188"),
    ("http://alice:pa55word@gpu1:8188", "http://alice:***@gpu1:8188"),
    ("https://alice:pa55word@comfy.example.com/base", "https://alice:***@comfy.example.com/base"),
    ("http://u:p@[::1]:8188", "http://u:***@[::1]:8188"),
    ("http://alice:p%40ss%3Aw0rd@gpu1:8188", "http://alice:***@gpu1:8188"),
])
def test_redact_url_keeps_user_and_host(url, shown):
    assert redact_url(url) == shown


def test_secrets_lists_every_configured_secret_value(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def.ghi")
    monkeypatch.setenv("COMFYUI_AUTH_HEADER", "X-Api-Key")  # an Authorization header cannot go with URL passwords
    monkeypatch.setenv("COMFYUI_AUTH_TOKEN", "Bearer s3cret")
    monkeypatch.setenv("COMFYUI_URL", "http://alice:p%40ss@gpu1:8188")
    monkeypatch.setenv("COMFYUI_URLS", '["http://bob:hunter22@gpu2:8188", "http://gpu3:8188"]')
    assert Settings().secrets() == [
        "abc.def.ghi", "Bearer s3cret",
        "p%40ss", "p@ss", "YWxpY2U6cEBzcw==",  # as written, decoded, and base64("alice:p@ss") of basic auth
        "hunter22", "Ym9iOmh1bnRlcjIy",
    ]


def test_an_authorization_header_and_a_url_password_are_refused_together(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMFYUI_AUTH_TOKEN", "Bearer s3cret")
    monkeypatch.setenv("COMFYUI_URLS", '["http://gpu1:8188", "http://bob:hunter22@gpu2:8188"]')
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "cannot be used together" in err and "hunter22" not in err and "s3cret" not in err


def test_no_secrets_configured(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert Settings(comfyui_url="http://alice@gpu1:8188").secrets() == []


@pytest.mark.parametrize("name, value, expected", [
    ("OUTPUT_LIMIT", "0", "config error: OUTPUT_LIMIT: Input should be greater than or equal to 1"),
    ("COMFYUI_URL", "localhost:8188", "config error: COMFYUI_URL: must be an http:// or https:// URL"),
    ("LOG_LEVEL", "loud", "config error: LOG_LEVEL: Input should be 'debug', 'info', 'warning' or 'error'"),
])
def test_bad_value_exits_2_with_one_line(monkeypatch, tmp_path, capsys, name, value, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(expected)


def test_bot_py_bad_setting_has_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "OUTPUT_LIMIT": "lots"}
    done = subprocess.run([sys.executable, str(ROOT / "bot.py"), "check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "config error: OUTPUT_LIMIT: Input should be a valid integer, unable to parse string as an integer"


def test_a_setting_that_is_not_json_is_named_not_a_traceback(monkeypatch):
    import pytest as _pytest

    from config import ConfigError, read_settings

    for name in ("MODEL_PRESETS", "COMFYUI_URLS", "SERVER_PRICES"):
        monkeypatch.setenv(name, "{not json")
        with _pytest.raises(ConfigError) as caught:
            read_settings(_env_file=None)
        assert caught.value.lines == [f"config error: {name}: not valid JSON"]
        monkeypatch.delenv(name)
