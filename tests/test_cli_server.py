"""The ``tablekit`` command as a user runs it (a subprocess), against ``tablekit serve`` on
127.0.0.1 and on the local datastack: --server/--token (resolved as ``tablekit.connect`` resolves
it, never printed), --version, help on every option, --out with every format, CLI advice."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from _server import running_server

NUC = "nucleus_detection_v0"
SECRET = "cli-s3cret-token-42"


def run(*args, env=None, check=True):
    p = subprocess.run(
        [sys.executable, "-m", "tablekit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def url(path):
    with running_server(path, token=SECRET) as u:
        yield u


def _no_token(env_home, p):
    assert SECRET not in p.stdout and SECRET not in p.stderr
    assert "Traceback" not in p.stderr


def test_query_and_tables_reach_a_server_with_the_token_argument(url, client, tmp_path):
    home = {"HOME": str(tmp_path), "CAVE_TOKEN": ""}
    p = run(
        "query",
        NUC,
        "--server",
        url,
        "--datastack",
        client.datastack,
        "--token",
        SECRET,
        "--where",
        "volume>300",
        "--format",
        "csv",
        env=home,
    )
    got = pd.read_csv(io.StringIO(p.stdout))
    want = client.tables[NUC](volume={">": 300}).query(split_positions=True)  # the local engine
    assert len(want) > 0 and got["id"].tolist() == want["id"].tolist()
    _no_token(home, p)
    p = run("tables", "--server", url, "--datastack", client.datastack, "--token", SECRET, env=home)
    for t in client.get_tables():
        assert t in p.stdout and f"{client.get_annotation_count(t):,} rows" in p.stdout
    _no_token(home, p)


def test_token_from_the_environment_then_the_secret_files(url, client, tmp_path):
    args = ("query", NUC, "--server", url, "--datastack", client.datastack, "--limit", "3", "--format", "csv")
    p = run(*args, env={"HOME": str(tmp_path), "CAVE_TOKEN": SECRET})
    assert len(pd.read_csv(io.StringIO(p.stdout))) == 3
    _no_token(None, p)
    # no token anywhere: a clear error with CLI advice, no traceback
    p = run(*args, env={"HOME": str(tmp_path), "CAVE_TOKEN": ""}, check=False)
    assert p.returncode == 2 and "--token" in p.stderr and "token=..." not in p.stderr, p.stderr
    _no_token(None, p)
    # CAVEclient's secret file
    secrets = tmp_path / ".cloudvolume" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "cave-secret.json").write_text(json.dumps({"token": SECRET}))
    p = run(*args, env={"HOME": str(tmp_path), "CAVE_TOKEN": ""})
    assert len(pd.read_csv(io.StringIO(p.stdout))) == 3
    _no_token(None, p)
    # a wrong token: refused by the server, the wrong value not echoed
    p = run(*args, "--token", "wrong-token-xyz", env={"HOME": str(tmp_path)}, check=False)
    assert p.returncode == 2 and "wrong-token-xyz" not in p.stderr + p.stdout and "Traceback" not in p.stderr


def test_server_options_are_checked_with_cli_advice(path, url):
    p = run("tables", "--server", url, check=False)
    assert p.returncode == 2 and "--datastack NAME" in p.stderr
    p = run("tables", "--path", path, "--token", "x", check=False)
    assert p.returncode == 2 and "add --server URL" in p.stderr
    p = run("tables", "--path", path, "--server", url, "--datastack", "d", check=False)
    assert p.returncode == 2 and "not both" in p.stderr


def test_version():
    from importlib.metadata import version

    p = run("--version")
    assert p.stdout.strip() == f"tablekit {version('tablekit')}"


def test_every_option_has_help():
    from tablekit.cli import _parser

    missing = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif not action.help:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")

    walk(_parser(), "tablekit")
    assert missing == []


def test_out_writes_in_every_format(path, client, tmp_path):
    want = client.tables[NUC](volume={">": 300}).query(split_positions=True)
    base = ("query", NUC, "--path", path, "--where", "volume>300")
    # default format with --out x.txt: the table as text, every row
    txt = tmp_path / "x.txt"
    run(*base, "--out", str(txt))
    lines = txt.read_text().splitlines()
    assert len(lines) == len(want) + 1 and lines[0].split()[0] == "id"
    assert [int(line.split()[0]) for line in lines[1:]] == want["id"].tolist()
    # the suffix chooses csv / parquet
    run(*base, "--out", str(tmp_path / "x.csv"))
    assert pd.read_csv(tmp_path / "x.csv")["id"].tolist() == want["id"].tolist()
    run(*base, "--out", str(tmp_path / "x.parquet"))
    assert pd.read_parquet(tmp_path / "x.parquet")["id"].tolist() == want["id"].tolist()
    # an explicit --format wins over the suffix
    run(*base, "--format", "csv", "--out", str(tmp_path / "y.txt"))
    assert pd.read_csv(tmp_path / "y.txt")["id"].tolist() == want["id"].tolist()
    run(*base, "--format", "table", "--out", str(tmp_path / "z.csv"))
    assert (tmp_path / "z.csv").read_text().splitlines()[0].split()[0] == "id"


def test_errors_give_cli_advice(path, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "something").write_text("x")
    p = run("sample", "--out", str(d), "--synapses", "100", check=False)
    assert p.returncode == 2 and "add --overwrite" in p.stderr and "overwrite=True" not in p.stderr
    # the library's Python advice, reworded (the texts of tables.py and the CAVE session)
    import tablekit
    from tablekit.cli import _cli_words

    c = tablekit.connect(path=path)
    with pytest.raises(tablekit.UnknownTableError) as e:
        c.views["nope"]
    words = _cli_words(str(e.value))
    assert "list(client" not in words and "`tablekit tables`" in words
    assert "pass --token TOKEN" in _cli_words("No token was sent: pass token=..., set $CAVE_TOKEN")


def test_stubs_are_written_0644(tmp_path):
    out = tmp_path / "stubs"
    p = subprocess.run(
        [sys.executable, "-m", "tablekit", "stubs", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        umask=0o022,
    )
    assert p.returncode == 0, p.stderr
    files = sorted(p for p in out.rglob("*.pyi"))
    assert len(files) == 2
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o644, (f, oct(f.stat().st_mode))
