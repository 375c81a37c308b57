"""Configuration: dlt's providers, flag overrides, and one-line errors for bad values."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines.settings import ConfigError, check_base_url, load_settings, parse_duration
from pipelines.stackai.flows import FlowRef


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("STACKAI_API_KEY", "SOURCES__STACKAI__API_KEY", "SOURCES__STACKAI__FLOWS"):
        monkeypatch.delenv(name, raising=False)


def test_key_from_either_variable_and_flags_override_config(monkeypatch):
    monkeypatch.setenv("STACKAI_API_KEY", "sk-plain")
    settings = load_settings(flows=["org-1/flow-1", "org-1/flow-1", "org-2/flow-9"])
    assert settings.api_key == "sk-plain"
    assert settings.flows == (FlowRef("org-1", "flow-1"), FlowRef("org-2", "flow-9"))
    monkeypatch.setenv("SOURCES__STACKAI__API_KEY", "sk-dlt")
    assert load_settings(flows=["o/f"]).api_key == "sk-dlt"
    assert "sk-dlt" not in repr(load_settings(flows=["o/f"]))


@pytest.mark.parametrize("ending", ["\r\n", "\n", "  ", "\t"])
def test_a_key_read_from_a_file_loses_its_line_ending(monkeypatch, ending):
    monkeypatch.setenv("STACKAI_API_KEY", "sk-abc" + ending)
    assert load_settings(flows=["o/f"]).api_key == "sk-abc"


@pytest.mark.parametrize("key", ["sk-a b", "sk-a\rb", "sk-a\x00b", "sk-\u200ba"])
def test_a_key_with_spaces_or_control_characters_is_refused_without_showing_it(monkeypatch, key):
    with pytest.raises(ConfigError) as info:
        load_settings(api_key=key, flows=["o/f"])
    assert "control characters" in str(info.value)
    assert "sk-" not in str(info.value)


def test_config_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("STACKAI_API_KEY", "k")
    monkeypatch.setenv("SOURCES__STACKAI__FLOWS", '["a/b", "c/d"]')
    monkeypatch.setenv("SOURCES__STACKAI__LOOKBACK", "PT30M")
    monkeypatch.setenv("SOURCES__STACKAI__MAX_OPEN_RUN_AGE", "P2D")
    monkeypatch.setenv("SOURCES__STACKAI__FEEDBACK_LOOKBACK", "P7D")
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "7")
    settings = load_settings()
    assert [str(f) for f in settings.flows] == ["a/b", "c/d"]
    assert settings.rules.lookback == timedelta(minutes=30)
    assert settings.rules.max_open_run_age == timedelta(days=2)
    assert settings.rules.feedback_lookback == timedelta(days=7)
    assert settings.http.max_attempts == 7


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        ({}, {"flows": ["o/f"]}, "no API key"),
        ({"STACKAI_API_KEY": "k"}, {}, "no flow to sync"),
        ({"STACKAI_API_KEY": "k"}, {"flows": ["o/../f"]}, "ORG_ID/FLOW_ID"),
        ({"STACKAI_API_KEY": "k"}, {"flows": ["o/.."]}, "flow_id"),
        ({"STACKAI_API_KEY": "k"}, {"flows": ["o/f x"]}, "flow_id"),
        (
            {"STACKAI_API_KEY": "k", "SOURCES__STACKAI__LOOKBACK": "soon"},
            {"flows": ["o/f"]},
            "sources.stackai.lookback",
        ),
        (
            {"STACKAI_API_KEY": "k"},
            {"flows": ["o/f"], "since": "2026-02-01", "until": "2026-01-01"},
            "after --until",
        ),
        (
            {"STACKAI_API_KEY": "k", "RUNTIME__REQUEST_TIMEOUT": "0"},
            {"flows": ["o/f"]},
            "runtime.request_timeout",
        ),
        (
            {"STACKAI_API_KEY": "k", "SOURCES__STACKAI__DUCKDB_MEMORY_LIMIT": "lots"},
            {"flows": ["o/f"]},
            "sources.stackai.duckdb_memory_limit",
        ),
        (
            {"STACKAI_API_KEY": "k", "SOURCES__STACKAI__DUCKDB_MEMORY_LIMIT": "1000000"},
            {"flows": ["o/f"]},
            "sources.stackai.duckdb_memory_limit",
        ),
    ],
)
def test_bad_configuration_is_one_line_naming_the_key(monkeypatch, env, kwargs, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["https://api.stack-ai.com/", "http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:9"],
)
def test_https_or_loopback_base_urls_are_accepted(url):
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://api.stack-ai.com",
        "ftp://x",
        "https://user:pw@api.stack-ai.com",
        "api",
        "http://127.attacker.example:8765",
        "http://127.0.0.1.nip.io",
        "https://api.stack-ai.com:notaport",
    ],
)
def test_other_base_urls_are_refused(url):
    with pytest.raises(ConfigError):
        check_base_url(url)


def test_insecure_http_needs_the_explicit_flag():
    assert check_base_url("http://10.0.0.5:80", allow_insecure_http=True) == "http://10.0.0.5:80"


@pytest.mark.parametrize(
    ("value", "seconds"), [("PT1H", 3600), ("P7D", 7 * 86400), (90, 90), ("PT0S", 0)]
)
def test_durations(value, seconds):
    assert parse_duration(value, "k") == timedelta(seconds=seconds)


def test_model_prices_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("STACKAI_API_KEY", "k")
    monkeypatch.setenv(
        "SOURCES__STACKAI__MODEL_PRICES",
        '{"Local/llama3": {"input_per_mtok": 0.5, "output_per_mtok": 1, "from": "2026-01-01"}}',
    )
    (override,) = load_settings(flows=["o/f"]).model_prices
    assert (override.provider, override.model_id) == ("Local", "llama3")
    assert (float(override.input_per_mtok), float(override.output_per_mtok)) == (0.5, 1.0)
    assert str(override.start) == "2026-01-01"


def test_a_bad_model_price_is_one_error_naming_the_key(monkeypatch):
    monkeypatch.setenv("STACKAI_API_KEY", "k")
    monkeypatch.setenv("SOURCES__STACKAI__MODEL_PRICES", '{"llama3": {"input_per_mtok": 1}}')
    with pytest.raises(ConfigError, match=r"sources\.stackai\.model_prices: key 'llama3'"):
        load_settings(flows=["o/f"])


def test_model_prices_from_config_toml_tables(tmp_path):
    from tests.support.cli import run_python

    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(
        '[sources.stackai.model_prices."OpenAI/gpt-4o"]\n'
        "input_per_mtok = 2.0\noutput_per_mtok = 8.0\n"
        '[sources.stackai.model_prices."Local/llama3:8b"]\n'
        'input_per_mtok = 0\noutput_per_mtok = 0.1\nfrom = "2026-02-01"\n',
        encoding="utf-8",
    )
    result = run_python(
        "-c",
        "from pipelines.settings import load_settings\n"
        "for o in load_settings(flows=['o/f']).model_prices:\n"
        "    print(o.provider, o.model_id, o.input_per_mtok, o.output_per_mtok, o.start)",
        cwd=tmp_path,
        project_config=False,
        env={"STACKAI_API_KEY": "sk-test"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "OpenAI gpt-4o 2.0 8.0 None",
        "Local llama3:8b 0 0.1 2026-02-01",
    ]
